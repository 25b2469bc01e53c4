# The container image, built without a container engine: an OCI archive of the release `ipa` binary
# (crates/ipa-image; deploy/Dockerfile builds the same layout with Docker).
.PHONY: image
IMAGE_OUT ?= ipa-image.oci.tar

image: ## the image as an OCI archive from a release build, no container engine (IMAGE_OUT=path; default ./ipa-image.oci.tar)
	cargo build --release --locked -p ipa
	target=$$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])') && \
	  cargo run --quiet --locked -p ipa-image -- --binary "$$target/release/ipa" --out "$(IMAGE_OUT)"
