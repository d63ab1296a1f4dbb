package projections

import (
	"path/filepath"
	"testing"

	"engram/log"
)

func h(s string) []byte { return []byte(s + "-hash-padding-to-32-bytes-xxxxxxx"[:32-len(s)]) }

// accountFixture exercises every record of the accounts area, with
// multi-record batches where the API writes them.
func accountFixture() [][]any {
	i64 := func(v int64) *int64 { return &v }
	return [][]any{
		{&AccountRecord{UserID: "@a:x", PasswordHash: "h", TS: 1}, &RegTokenUseRecord{Token: "tok", UserID: "@a:x"}},
		{&AccountRecord{UserID: "@b:x", PasswordHash: "h", TS: 2}},
		{&AccountRecord{UserID: "@g:x", Guest: true, TS: 2}},
		{&LoginRecord{UserID: "@a:x", DeviceID: "D1", TokenHash: h("a1"), TS: 3}},
		{&LoginRecord{UserID: "@a:x", DeviceID: "D2", TokenHash: h("a2"), RefreshHash: h("r2"), ExpiresTS: 1000, TS: 3}},
		{&DeviceNameRecord{UserID: "@a:x", DeviceID: "D1", DisplayName: "Phone"}},
		{&DeviceNameRecord{UserID: "@a:x", DeviceID: "GONE", DisplayName: "x"}},
		// D2 refreshes r2 -> (a3, r3), then repeats r2 (lost answer) -> (a4, r4),
		// then uses r4 -> (a5, r5), which retires r2 and a2 (a4 and r4 stay
		// valid as the previous pair); a late r2 then changes nothing.
		{&RefreshRecord{UserID: "@a:x", DeviceID: "D2", OldRefreshHash: h("r2"), TokenHash: h("a3"), RefreshHash: h("r3"), ExpiresTS: 2000, TS: 4}},
		{&RefreshRecord{UserID: "@a:x", DeviceID: "D2", OldRefreshHash: h("r2"), TokenHash: h("a4"), RefreshHash: h("r4"), ExpiresTS: 3000, TS: 5}},
		{&RefreshRecord{UserID: "@a:x", DeviceID: "D2", OldRefreshHash: h("r4"), TokenHash: h("a5"), RefreshHash: h("r5"), ExpiresTS: 4000, TS: 6}},
		{&RefreshRecord{UserID: "@a:x", DeviceID: "D2", OldRefreshHash: h("r2"), TokenHash: h("a6"), RefreshHash: h("r6"), ExpiresTS: 5000, TS: 7}},
		{&ProfileRecord{UserID: "@a:x", Key: "displayname", Value: []byte(`"Alice"`), TS: 8}},
		{&ProfileRecord{UserID: "@a:x", Key: "m.tz", Value: []byte(`"UTC"`), TS: 8}},
		{&ProfileRecord{UserID: "@a:x", Key: "m.tz", Delete: true, TS: 9}},
		{&ProfileRecord{UserID: "@b:x", Key: "avatar_url", Value: []byte(`"mxc://x/y"`), TS: 9}},
		{&RegTokenRecord{Token: "tok", Op: RegTokenCreate, UsesAllowed: i64(2)}},
		{&AccountRecord{UserID: "@c:x", TS: 10}, &RegTokenUseRecord{Token: "tok", UserID: "@c:x"}},
		{&RegTokenRecord{Token: "tok", Op: RegTokenUpdate, ExpiryTime: i64(99), SetExpiry: true}},
		{&RegTokenRecord{Token: "del", Op: RegTokenCreate}},
		{&RegTokenRecord{Token: "del", Op: RegTokenDelete}},
		{&LoginRecord{UserID: "@b:x", DeviceID: "B1", TokenHash: h("b1"), RefreshHash: h("rb1"), ExpiresTS: 10, TS: 11}},
		{&LogoutRecord{UserID: "@b:x", All: true}, &DeactivateRecord{UserID: "@b:x", Erase: true, TS: 12}},
		{&PasswordRecord{UserID: "@a:x", PasswordHash: "h2"}},
	}
}

func TestAccountRecords(t *testing.T) {
	set, _ := All()
	dir := t.TempDir()
	l := openLog(t, filepath.Join(dir, "db"), set)
	defer l.Close()
	for _, batch := range accountFixture() {
		recs := make([]log.Record, 0, len(batch))
		for _, v := range batch {
			rec, err := Encode(v)
			if err != nil {
				t.Fatal(err)
			}
			recs = append(recs, rec)
		}
		if _, err := l.Append(recs...); err != nil {
			t.Fatal(err)
		}
	}
	st, err := NewStore(l, l.DB(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()

	live := func(tok string) bool { _, _, err := st.TokenOwner(h(tok)); return err == nil }
	refreshLive := func(tok string) bool { _, _, err := st.RefreshOwner(h(tok)); return err == nil }
	for tok, want := range map[string]bool{"a1": true, "a2": false, "a3": false, "a4": true, "a5": true, "b1": false} {
		if live(tok) != want {
			t.Errorf("access token %s live=%v", tok, !want)
		}
	}
	for tok, want := range map[string]bool{"r2": false, "r3": false, "r4": true, "r5": true, "rb1": false, "r6": false} {
		if refreshLive(tok) != want {
			t.Errorf("refresh token %s live=%v", tok, !want)
		}
	}
	if exp, ok, err := st.TokenExpiry(h("a5")); err != nil || !ok || exp != 4000 {
		t.Errorf("expiry of a5: %d %v %v", exp, ok, err)
	}
	if _, ok, _ := st.TokenExpiry(h("a1")); ok {
		t.Error("a1 expires")
	}
	if u, d, err := st.RefreshOwner(h("r5")); u != "@a:x" || d != "D2" || err != nil {
		t.Errorf("owner of r5: %q %q %v", u, d, err)
	}
	if d, err := st.Device("@a:x", "D1"); err != nil || d.DisplayName != "Phone" {
		t.Errorf("device D1: %+v %v", d, err)
	}
	if _, err := st.Device("@a:x", "GONE"); err != ErrNotFound {
		t.Errorf("renaming an unknown device created it: %v", err)
	}
	if devs, _ := st.Devices("@b:x"); len(devs) != 0 {
		t.Errorf("deactivated user has devices: %+v", devs)
	}
	if acc, err := st.Account("@b:x"); err != nil || !acc.Deactivated || acc.PasswordHash != "" {
		t.Errorf("deactivated account: %+v %v", acc, err)
	}
	if acc, _ := st.Account("@a:x"); acc.PasswordHash != "h2" || acc.Deactivated {
		t.Errorf("account a: %+v", acc)
	}
	if p, _ := st.Profile("@a:x"); len(p) != 1 || p[0].Key != "displayname" || string(p[0].Value) != `"Alice"` {
		t.Errorf("profile a: %+v", p)
	}
	if p, _ := st.Profile("@c:x"); len(p) != 1 || string(p[0].Value) != `"c"` {
		t.Errorf("default display name: %+v", p)
	}
	if p, _ := st.Profile("@b:x"); len(p) != 0 {
		t.Errorf("erased profile: %+v", p)
	}
	if p, _ := st.Profile("@g:x"); len(p) != 0 {
		t.Errorf("guest profile: %+v", p)
	}
	tok, err := st.RegToken("tok")
	if err != nil || tok.Completed != 1 || *tok.UsesAllowed != 2 || *tok.ExpiryTime != 99 {
		t.Errorf("reg token: %+v %v", tok, err)
	}
	if toks, _ := st.RegTokens(); len(toks) != 1 || toks[0].Token != "tok" {
		t.Errorf("reg tokens: %+v", toks)
	}

	// Replay reproduces the live rows byte for byte.
	rebuildMatches(t, set, l, filepath.Join(dir, "scratch"))
}

func TestJSONString(t *testing.T) {
	for in, want := range map[string]string{"abc": `"abc"`, `a"b\`: `"a\"b\\"`, "a\x01": `"a\u0001"`} {
		if got := string(jsonString(in)); got != want {
			t.Errorf("%q: %s, want %s", in, got, want)
		}
	}
	if localpart("@a.b:x:8448") != "a.b" || localpart("nobody") != "nobody" {
		t.Error("localpart")
	}
}
