# Conveniences for those with make; each target is the same as `python3 make.py <target>`.
.PHONY: up check test bench
up check test bench:
	python3 make.py $@
