package rooms

import (
	"hash/maphash"
	"strings"
	"sync"
)

// txnFilter answers, from memory, "this transaction was certainly never
// stored" for the common send: a new transaction ID. Without it every send
// with a transaction pays a store lookup that misses (a pebble point read
// through a large memtable, about as costly as the rest of the critical
// section).
//
// It is a Bloom filter per scope: the part of a transaction key up to its
// second NUL byte, i.e. "user\0device" in the keys api builds
// (user\0device\0room\0txn). A scope is learned once per process, by
// scanning its stored keys, the first time a send of that scope asks; it is
// kept up to date as this process stores transactions (add). A filter only
// ever answers "maybe" for a key it was given, so "no" is exact; "maybe"
// falls back to the store.
//
// Exactness across the learning scan: a send calls add after its record is
// durable (its row readable) and before it counts itself done (txnDone).
// add and the creation of a scope are ordered by txnFilter.mu: if add came
// first, the scan, which starts after the creation, reads the row; if the
// creation came first, add puts the key into the scope. Either way, by the
// time a send is counted done, a ready scope holds its key, which is what
// the protocol in Send needs of the first lookup (see Send).
type txnFilter struct {
	seed   maphash.Seed
	mu     sync.Mutex
	scopes map[string]*txnScope
}

type txnScope struct {
	mu     sync.Mutex
	ready  bool // learned: "no" answers are exact
	layers []bloom
}

func newTxnFilter() *txnFilter {
	return &txnFilter{seed: maphash.MakeSeed(), scopes: map[string]*txnScope{}}
}

// txnScopeOf returns the scope of a transaction key, or false when the key
// has no scope (fewer than two NULs): such keys are always looked up.
func txnScopeOf(txn string) (string, bool) {
	i := strings.IndexByte(txn, 0)
	if i < 0 {
		return "", false
	}
	j := strings.IndexByte(txn[i+1:], 0)
	if j < 0 {
		return "", false
	}
	return txn[:i+1+j+1], true // including the second NUL
}

// mayHave reports whether txn may have been stored; false is exact. The
// first ask of a scope learns it, scanning with keys (a store read).
func (f *txnFilter) mayHave(txn string, keys func(prefix string, fn func([]byte) bool) error) bool {
	scope, ok := txnScopeOf(txn)
	if !ok {
		return true
	}
	f.mu.Lock()
	sc, ok := f.scopes[scope]
	if !ok {
		sc = &txnScope{}
		f.scopes[scope] = sc
	}
	f.mu.Unlock()
	if !ok {
		f.learn(sc, scope, keys)
	}
	h := maphash.String(f.seed, txn)
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if !sc.ready {
		return true
	}
	for i := range sc.layers {
		if sc.layers[i].has(h) {
			return true
		}
	}
	return false
}

// learn reads a new scope's stored keys. Sends that ask meanwhile get
// "maybe"; a failed scan leaves the scope unready for good (always "maybe").
func (f *txnFilter) learn(sc *txnScope, scope string, keys func(string, func([]byte) bool) error) {
	var hs []uint64
	err := keys(scope, func(k []byte) bool {
		hs = append(hs, maphash.Bytes(f.seed, k)) // == maphash.String of the same bytes
		return true
	})
	if err != nil {
		return
	}
	sc.mu.Lock()
	for _, h := range hs {
		sc.insert(h)
	}
	sc.ready = true
	sc.mu.Unlock()
}

// add records that txn is (being) stored by this process. Call it once the
// send is durable and before it is counted done.
func (f *txnFilter) add(txn string) {
	scope, ok := txnScopeOf(txn)
	if !ok {
		return
	}
	f.mu.Lock()
	sc := f.scopes[scope]
	f.mu.Unlock()
	if sc == nil {
		return // not learned yet: the learning scan will read its row
	}
	h := maphash.String(f.seed, txn)
	sc.mu.Lock()
	sc.insert(h)
	sc.mu.Unlock()
}

// insert adds h to the newest layer, starting a layer twice as large when
// it is full, so the false-positive rate stays near bloomFP however many
// keys a scope gathers. Called with sc.mu held.
func (sc *txnScope) insert(h uint64) {
	n := len(sc.layers)
	if n == 0 || sc.layers[n-1].n >= sc.layers[n-1].capacity {
		c := 256
		if n > 0 {
			c = 2 * sc.layers[n-1].capacity
		}
		sc.layers = append(sc.layers, newBloom(c))
		n++
	}
	sc.layers[n-1].add(h)
}

// bloom is a Bloom filter of 64-bit hashes: bloomBits bits per key and
// bloomK probes, about 1% false positives at capacity.
type bloom struct {
	bits     []uint64
	mask     uint64
	n        int
	capacity int
}

const (
	bloomBits = 10
	bloomK    = 7
)

func newBloom(capacity int) bloom {
	m := uint64(64)
	for m < uint64(capacity*bloomBits) {
		m <<= 1
	}
	return bloom{bits: make([]uint64, m/64), mask: m - 1, capacity: capacity}
}

// probes: double hashing, h1 + i*h2 (h2 odd so the probes differ).
func (b *bloom) add(h uint64) {
	h1, h2 := h, (h>>32|h<<32)|1
	for i := 0; i < bloomK; i++ {
		x := (h1 + uint64(i)*h2) & b.mask
		b.bits[x/64] |= 1 << (x % 64)
	}
	b.n++
}

func (b *bloom) has(h uint64) bool {
	h1, h2 := h, (h>>32|h<<32)|1
	for i := 0; i < bloomK; i++ {
		x := (h1 + uint64(i)*h2) & b.mask
		if b.bits[x/64]&(1<<(x%64)) == 0 {
			return false
		}
	}
	return true
}
