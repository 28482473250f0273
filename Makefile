# The two commands of the README; both do their own set-up.
.PHONY: demo test bench serve-demo
demo:
	scripts/setup.sh python
	.venv/bin/blockmirror demo

test:
	scripts/test.sh

bench:
	cargo bench -p blockmirror-core

serve-demo:
	scripts/serve-demo.sh
