# The real test bed: KWOK cluster (built control plane), kube-state-metrics, `ipa loadsim`, Prometheus.
.PHONY: testbed-tools testbed-up testbed-down testbed-e2e

testbed-tools: ## build (or reuse cached) control plane, etcd, KWOK and kube-state-metrics binaries
	testbed/scripts/build-tools.sh

testbed-up: ## start the test bed on 127.0.0.1 (idempotent) and write testbed/.env
	testbed/scripts/testbed-up.sh

testbed-down: ## stop every test-bed process and delete the cluster
	testbed/scripts/testbed-down.sh

testbed-e2e: ## run the test bed's own end-to-end test against a running bed
	set -a; source testbed/.env; set +a; cargo test -p ipa-loadsim --test testbed_e2e -- --ignored --test-threads=1 --nocapture
