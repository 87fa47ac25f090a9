# swiftasync: build the engine .so, install it, test, benchmark.
SWIFT        ?= swift
ENGINE_DIR   := build
ENGINE_SO    := $(ENGINE_DIR)/swiftasync.so
ENGINE_ABS   := $(CURDIR)/$(ENGINE_SO)
ENGINESDIR    = $(shell openssl version -e | sed -n 's/^ENGINESDIR: "\(.*\)"/\1/p')
MODULESDIR    = $(shell openssl version -m | sed -n 's/^MODULESDIR: "\(.*\)"/\1/p')
# MULTIBUFFER=0 builds without Intel's crypto_mb: every operation scalar.
# Each kind of build has scratch paths of its own.
MULTIBUFFER  ?= 1
ifeq ($(MULTIBUFFER),0)
export SWIFTASYNC_CRYPTO_MB :=
SCRATCH_KIND := -scalar
else
export SWIFTASYNC_CRYPTO_MB := $(CURDIR)/.build-crypto-mb
SCRATCH_KIND :=
endif
# The engine has its own scratch path: its flags differ from the tests'.
ENGINE_BUILD := .build-engine$(SCRATCH_KIND)
TEST_BUILD   := .build$(SCRATCH_KIND)
# The packaged engine-loader carries its Swift runtime: a scratch path of its own.
STATIC_BUILD := .build-static$(SCRATCH_KIND)
STATIC_LOADER = $$($(SWIFT) build -c release --static-swift-stdlib --scratch-path $(STATIC_BUILD) --show-bin-path)/engine-loader
# engine-loader's manual page comes from its argument parser; the engine's
# build flags do not matter to it, so both kinds of build share one scratch path.
MAN_BUILD    := .build-man
MANPAGE      := build/man/engine-loader.1
PREFIX       ?= /usr/local
VERSION      ?= 0.9.0
ARCH          = $(shell dpkg --print-architecture)
DEB_DIR      := build/deb$(SCRATCH_KIND)
DEBS          = $(DEB_DIR)/swiftasync_$(VERSION)_$(ARCH).deb $(DEB_DIR)/swiftasync-dbgsym_$(VERSION)_$(ARCH).deb

.PHONY: all engine loader static-loader man install deps test test-tlsfuzzer test-teardown test-versions versions sanitize fuzz stress bench bench-tls bench-latency bench-keystore deb test-deb bench-sweep clean

all: engine loader

deps:
	scripts/install-deps.sh
	scripts/fetch-pkcs11-provider.sh > /dev/null
ifneq ($(MULTIBUFFER),0)
	scripts/fetch-crypto-mb.sh $(SWIFTASYNC_CRYPTO_MB)
endif

engine: deps
	SWIFT=$(SWIFT) scripts/build-engine.sh $(ENGINE_BUILD) $(ENGINE_SO)
	@echo "built $(ENGINE_SO)"

# One .so, two names: the engine (ENGINE_by_id) and the provider (-provider
# swiftasync); engine-loader and its manual page under PREFIX.
install: engine static-loader man
	install -m 0644 $(ENGINE_SO) $(ENGINESDIR)/swiftasync.so
	install -d $(MODULESDIR)
	ln -sf $(ENGINESDIR)/swiftasync.so $(MODULESDIR)/swiftasync.so
	install -D -m 0755 $(STATIC_LOADER) $(PREFIX)/bin/engine-loader
	install -D -m 0644 $(MANPAGE) $(PREFIX)/share/man/man1/engine-loader.1
	@echo "installed $(ENGINESDIR)/swiftasync.so, $(MODULESDIR)/swiftasync.so, $(PREFIX)/bin/engine-loader and its manual page"

# engine-loader with its Swift runtime linked in, as installed and packaged.
static-loader:
	$(SWIFT) build -c release --static-swift-stdlib --scratch-path $(STATIC_BUILD) --product engine-loader

# swift-argument-parser's generate-manual plugin, dated by the last commit.
man:
	env -u SWIFTASYNC_CRYPTO_MB $(SWIFT) package --scratch-path $(MAN_BUILD) generate-manual \
	    --date $$(git log -1 --format=%cs 2>/dev/null || date +%F) --authors "swiftasync developers"
	install -D -m 0644 $(MAN_BUILD)/plugins/GenerateManual/outputs/engine-loader/engine-loader.1 $(MANPAGE)

loader:
	$(SWIFT) build -c release --scratch-path $(TEST_BUILD) --product engine-loader
	@echo "built $$($(SWIFT) build -c release --scratch-path $(TEST_BUILD) --show-bin-path)/engine-loader"

# Unit tests of the pool, then the .so loaded in-process and under real apps,
# then the Debian packages installed and removed, then the provider on the
# newer OpenSSL versions.
test: engine deb
	$(SWIFT) build --build-tests --scratch-path $(TEST_BUILD)
	SWIFTASYNC_SO=$(ENGINE_ABS) $(SWIFT) test --skip-build --disable-swift-testing --scratch-path $(TEST_BUILD)
	scripts/test-deb.sh $(DEBS)
	$(MAKE) --no-print-directory test-tlsfuzzer
	$(MAKE) --no-print-directory test-teardown
	$(MAKE) --no-print-directory test-versions

# A peer's TLS test suite: tlsfuzzer against HAProxy (ssl-mode-async,
# nbthread 1 and 2) and s_server -async, each with plain OpenSSL, the engine
# and the provider (scripts/tlsfuzzer-suite.py). tlsfuzzer is on neither PyPI
# nor Debian: where this machine has no git copy of it (TLSFUZZER_GIT, see
# scripts/fetch-tlsfuzzer.sh) the suite says so and is skipped.
TLSFUZZER_WORK := build/tlsfuzzer$(SCRATCH_KIND)
# The whole grid with the default build; the scalar build, whose handshakes
# differ only where lanes run, against HAProxy nbthread 2 (all five
# configurations), which keeps CI within the hour.
ifeq ($(MULTIBUFFER),0)
TLSFUZZER_SERVERS ?= haproxy2
else
TLSFUZZER_SERVERS ?= haproxy1,haproxy2,s_server
endif
test-tlsfuzzer: engine
	@status=0; folder=$$(scripts/fetch-tlsfuzzer.sh) || status=$$?; \
	if [ $$status -eq 3 ]; then echo "test-tlsfuzzer: SKIPPED, no copy of tlsfuzzer on this machine"; exit 0; fi; \
	[ $$status -eq 0 ] || exit $$status; \
	rm -rf $(TLSFUZZER_WORK); \
	python3 scripts/tlsfuzzer-suite.py --tlsfuzzer $$folder --python $$folder/venv/bin/python \
	    --module $(ENGINE_ABS) --repo $(CURDIR) --work $(TLSFUZZER_WORK) --servers $(TLSFUZZER_SERVERS)

# Connections torn down at every point of an offloaded handshake, thousands
# of times, against HAProxy with the engine and the provider, slow worker and
# quick (scripts/teardown-under-fire.py): HAProxy lives, keeps its fds, its
# connections and jobs, gets every operation handed back, and serves again.
test-teardown: engine
	rm -rf build/teardown$(SCRATCH_KIND)
	python3 scripts/teardown-under-fire.py --module $(ENGINE_ABS) --repo $(CURDIR) --work build/teardown$(SCRATCH_KIND)

# Newer OpenSSL from Debian's archive (trixie 3.5, sid 3.6, experimental 4.0),
# unpacked into .build-openssl-SERIES; the .so built against each into
# build/openssl-SERIES. 4.0 has no ENGINE: there it is the provider alone.
OPENSSL_SERIES ?= 3.5 4.0
versions: deps
	@for series in $(OPENSSL_SERIES); do \
	    folder=$$(scripts/fetch-openssl.sh $$series) || exit 1; \
	    SWIFT=$(SWIFT) SWIFTASYNC_OPENSSL=$$folder scripts/build-engine.sh \
	        .build-engine-openssl-$$series$(SCRATCH_KIND) build/openssl-$$series$(SCRATCH_KIND)/swiftasync.so || exit 1; \
	    echo "built build/openssl-$$series$(SCRATCH_KIND)/swiftasync.so against $$("$$folder/run" openssl version)"; \
	done

# On this machine's OpenSSL, then on each: loads, differential checks against
# that version's default provider (through the lanes and without), bad input,
# speed -async_jobs 64 and s_server -async handshakes counted.
test-versions: engine versions
	scripts/test-openssl-version.sh system $(ENGINE_SO)
	@for series in $(OPENSSL_SERIES); do \
	    scripts/test-openssl-version.sh .build-openssl-$$series build/openssl-$$series$(SCRATCH_KIND)/swiftasync.so || exit 1; \
	done

# swiftasync_<version>_<arch>.deb and its -dbgsym package, in build/deb.
deb: engine static-loader man
	scripts/build-deb.sh $(VERSION) $(ENGINE_SO) $(STATIC_LOADER) $(MANPAGE) $(DEB_DIR)

test-deb: deb
	scripts/test-deb.sh $(DEBS)

# The engine and the whole suite under AddressSanitizer with UBSan, then ThreadSanitizer.
sanitize: deps
	SWIFT=$(SWIFT) scripts/sanitize.sh address
	SWIFT=$(SWIFT) scripts/sanitize.sh thread

# libFuzzer over the RSA and EC entry points, differential: FUZZ_SECONDS=3600 for longer.
fuzz: deps
	SWIFT=$(SWIFT) scripts/fuzz.sh

# Hardening checks that take minutes: valgrind memcheck over openssl speed,
# then the soak (SOAK_OPS=2000000 for a longer one).
stress: engine
	$(SWIFT) build --scratch-path $(TEST_BUILD) --product engine-loader
	ENGINE_SO=$(ENGINE_ABS) ENGINE_LOADER=$$($(SWIFT) build --scratch-path $(TEST_BUILD) --show-bin-path)/engine-loader scripts/stress.sh

# The main job: the engine against plain OpenSSL, side by side, with ratios.
bench: engine
	ENGINE_SO=$(ENGINE_ABS) scripts/bench-speed.sh

# Throughput against -async_jobs 1-128 per algorithm, plotted (docs/sweep-*.png).
bench-sweep: engine
	ENGINE_SO=$(ENGINE_ABS) scripts/bench-sweep.sh docs

# Full TLS handshakes/s with and without the engine: engine-loader serve and HAProxy under h2load.
bench-tls: engine loader
	ENGINE_SO=$(ENGINE_ABS) ENGINE_LOADER=$$($(SWIFT) build -c release --scratch-path $(TEST_BUILD) --show-bin-path)/engine-loader scripts/bench-tls.sh

# Handshake latency under an open-loop load (10-120% of plain capacity and
# on), none/engine/provider, serve and HAProxy: percentiles, docs/latency-*.png.
bench-latency: engine loader
	ENGINE_SO=$(ENGINE_ABS) ENGINE_LOADER=$$($(SWIFT) build -c release --scratch-path $(TEST_BUILD) --show-bin-path)/engine-loader scripts/bench-latency.sh docs
	scripts/latency-targets.sh docs

# A token's key behind a device delay of +0/+5/+20/+100 ms: pkcs11-provider alone
# against swiftasync, engine-loader serve and HAProxy (docs/keystores.md).
bench-keystore: engine loader
	ENGINE_SO=$(ENGINE_ABS) ENGINE_LOADER=$$($(SWIFT) build -c release --scratch-path $(TEST_BUILD) --show-bin-path)/engine-loader scripts/bench-keystore.sh

clean:
	rm -rf $(ENGINE_DIR) $(ENGINE_BUILD) .build
