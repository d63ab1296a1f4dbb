package projections

import (
	"errors"
	"path/filepath"
	"testing"
)

// TestOpenIDTokens: tokens are found by hash until they are pruned by a
// later token issued after their expiry; a rebuild from the log gives the
// same rows; a restart keeps them.
func TestOpenIDTokens(t *testing.T) {
	set, _ := All()
	dir := t.TempDir()
	l := openLog(t, filepath.Join(dir, "db"), set)
	recs := []any{
		&OpenIDRecord{UserID: "@a:x", TokenHash: h("t1"), ExpiresTS: 1000, TS: 0},
		&OpenIDRecord{UserID: "@b:x", TokenHash: h("t2"), ExpiresTS: 2000, TS: 1000},
		&OpenIDRecord{UserID: "@a:x", TokenHash: h("t3"), ExpiresTS: 5000, TS: 2000},
		&OpenIDRecord{UserID: "@c:x", TokenHash: nil, ExpiresTS: 9000, TS: 9000}, // ignored
	}
	appendAll(t, l, recs)
	st, err := NewStore(l, l.DB(), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		hash    string
		user    string
		expires int64
	}{
		{"t1", "", 0}, // expired at 1000, pruned by t2 (issued at 1000)
		{"t2", "", 0}, // expired at 2000, pruned by t3
		{"t3", "@a:x", 5000},
		{"t4", "", 0},
	}
	for _, tt := range tests {
		u, exp, err := st.OpenIDUser(h(tt.hash))
		if tt.user == "" {
			if !errors.Is(err, ErrNotFound) {
				t.Errorf("%s: got %q %d %v, want not found", tt.hash, u, exp, err)
			}
			continue
		}
		if err != nil || u != tt.user || exp != tt.expires {
			t.Errorf("%s: got %q %d %v, want %q %d", tt.hash, u, exp, err, tt.user, tt.expires)
		}
	}
	// Only t3's two rows are left.
	n := 0
	st.scan('O', nil, []byte{0xff}, false, func(k, v []byte) bool { n++; return true })
	if n != 2 {
		t.Errorf("%d rows, want 2", n)
	}
	db, err := set.Rebuild(l, filepath.Join(dir, "scratch"))
	if err != nil {
		t.Fatal(err)
	}
	bad, err := set.Compare(l.DB(), db)
	db.Close()
	if err != nil || len(bad) != 0 {
		t.Fatalf("rebuild differs: %+v %v", bad, err)
	}
	st.Close()
	l.Close()

	l = openLog(t, filepath.Join(dir, "db"), set)
	defer l.Close()
	st, _ = NewStore(l, l.DB(), 1<<20)
	defer st.Close()
	if u, _, err := st.OpenIDUser(h("t3")); err != nil || u != "@a:x" {
		t.Fatalf("after reopen: %q %v", u, err)
	}
}
