# engram: build, run, test, bench. Needs only Go and Node (npm) on the PATH.
export PATH := $(PATH):/usr/local/go/bin
GO      ?= go
# An execution count, not a duration: a duration can end while a worker is
# mid-input, which go test reports as a failure (context deadline exceeded).
FUZZTIME ?= 20000x

.PHONY: build run test unit fuzz e2e bench clean

build:
	$(GO) build -o bin/engram ./cmd/engram

# A dev server on the embedded default: server name localhost, client API on
# http://127.0.0.1:8008, data in ./data, open registration.
run: build
	./bin/engram serve --dev

# Every test: vet, unit and crash tests, short fuzzing, real-client e2e.
test: build unit fuzz e2e

unit:
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 15m ./...

# Each fuzz target briefly (their seed corpora also run in `unit`);
# FUZZTIME=10m make fuzz for a longer run.
FUZZ_TARGETS = dag:FuzzCanonical dag:FuzzParseEvent stateres:FuzzResolve log:FuzzDecodeEnvelope \
	projections:FuzzDecodeRecord bench:FuzzReadResult api:FuzzGlobMatch api:FuzzParseSyncToken \
	api:FuzzSyncFilter api:FuzzE2EEParsers api/federation:FuzzParseXMatrix api/federation:FuzzACL \
	api:FuzzPagePos api:FuzzParseChildContent bench:FuzzSyncAnswer cmd/engram:FuzzParseOldKeys \
	projections:FuzzDecodeEvent projections:FuzzContentString projections:FuzzJSONMember \
	projections:FuzzScanRelatesTo projections:FuzzEntry projections:FuzzPlainPDU
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; fn=$${t#*:}; \
		echo "fuzz $$pkg $$fn ($(FUZZTIME))"; \
		$(GO) test ./$$pkg -run='^$$' -fuzz="^$$fn\$$" -fuzztime=$(FUZZTIME); \
	done

e2e: build e2e/node_modules/.installed
	cd e2e && ENGRAM_BIN=$(CURDIR)/bin/engram node --test --test-concurrency=1 *.test.mjs

e2e/node_modules/.installed: e2e/package.json
	cd e2e && (npm ci --no-audit --no-fund || npm install --no-audit --no-fund)
	touch $@

bench:
	$(GO) test -run='^$$' -bench=. -benchmem ./...

clean:
	rm -rf bin data
