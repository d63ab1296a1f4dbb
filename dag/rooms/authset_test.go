package rooms

import (
	"fmt"
	"testing"

	"engram/dag"
)

// TestAuthSetIsAMap: authSet answers as the map it replaces, past its
// array too.
func TestAuthSetIsAMap(t *testing.T) {
	for _, n := range []int{0, 1, 7, 8, 9, 20} {
		a, m := &authSet{}, map[dag.StateKeyTuple]*dag.Event{}
		for i := 0; i < n; i++ {
			k := dag.StateKeyTuple{Type: "t", StateKey: fmt.Sprint(i % 12)} // repeats replace
			ev := &dag.Event{ID: fmt.Sprint("$", i)}
			a.set(k, ev)
			m[k] = ev
		}
		for i := 0; i < 25; i++ {
			k := dag.StateKeyTuple{Type: "t", StateKey: fmt.Sprint(i)}
			if a.Get(k) != m[k] {
				t.Fatalf("n=%d: Get(%v) = %v, want %v", n, k, a.Get(k), m[k])
			}
		}
	}
}
