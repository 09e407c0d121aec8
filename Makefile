# Two commands do all set-up on a fresh machine (Debian/Raspberry Pi OS, Python 3.11):
#   make demo   - install, then run the daemon on a bundled real night, publishing stages over MQTT
#   make test   - install, then run the whole test suite (what CI runs: .ci/run)
# Both create ./.venv and install mosquitto from the distribution when it is missing.

VENV   ?= .venv
PY     := $(VENV)/bin/python
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
comma  := ,
EXTRAS ?= test,train

.PHONY: demo test setup system-deps test-deps clean

demo: setup
	$(VENV)/bin/edged run --config edged/data/demo.toml

test: setup test-deps
	$(PY) -m pytest

setup: system-deps $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))



# mosquitto is the broker the tests (and the embedded default) run; python3-venv makes the virtualenv.
system-deps:
	@missing=""; \
	command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || missing="$$missing mosquitto"; \
	python3 -c 'import ensurepip' 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
		echo "installing$$missing"; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

$(VENV)/.installed-%: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[$(EXTRAS)]'
	rm -f $(VENV)/.installed-* && touch $@

# chromium: the headless browser tests/test_dashboard.py drives; Node-RED (from npm, into .cache/) runs the
# example flow in tests/test_examples.py. Only the tests need them, not the daemon.
NODE_RED := .cache/node-red/node_modules/.bin/node-red
test-deps: $(NODE_RED)
	@command -v chromium >/dev/null || { echo "installing chromium"; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

$(NODE_RED):
	@command -v npm >/dev/null || { echo "installing nodejs and npm"; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; }
	npm install --silent --no-audit --no-fund --prefix .cache/node-red node-red@4

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info .cache
