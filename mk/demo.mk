# `make demo`: the autoscaler at work on the test bed (see scripts/demo.sh; LLM=1 asks llama-server).
.PHONY: demo
demo: ## test bed + agent + controller + the seed's test app and manifest, a compressed NAB ELB trace, a live table
	scripts/demo.sh
