package federation

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

func TestParseSendJoin(t *testing.T) {
	for _, c := range []struct {
		name, in     string
		state, chain []string
		event        string
		err          bool
	}{
		{name: "empty object", in: `{}`},
		{name: "full", in: ` { "origin":"a", "state" : [ {"a":1} , {"b":[1,{"c":"]}\"x"}]} ] ,"auth_chain":[{"d":null}],"event":{"e":true},"members_omitted":false,"servers_in_room":["a","b"]} `,
			state: []string{`{"a":1}`, `{"b":[1,{"c":"]}\"x"}]}`}, chain: []string{`{"d":null}`}, event: `{"e":true}`},
		{name: "empty arrays", in: `{"state":[],"auth_chain":[]}`},
		{name: "null state", in: `{"state":null,"auth_chain":[{}]}`, chain: []string{`{}`}},
		{name: "escaped key", in: `{"st\u0061te":[{"a":1}]}`, state: []string{`{"a":1}`}},
		{name: "case-insensitive key", in: `{"STATE":[{"a":1}]}`, state: []string{`{"a":1}`}},
		{name: "last key wins", in: `{"state":[1],"state":[2]}`, state: []string{`2`}},
		{name: "not an object", in: `[]`, err: true},
		{name: "truncated", in: `{"state":[{"a":1}`, err: true},
		{name: "trailing garbage", in: `{"state":[]} x`, err: true},
		{name: "empty", in: ``, err: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := parseSendJoin([]byte(c.in))
			if (err != nil) != c.err {
				t.Fatalf("err = %v, want error %v", err, c.err)
			}
			if c.err {
				return
			}
			if s := rawStrings(got.State); fmt.Sprint(s) != fmt.Sprint(c.state) {
				t.Errorf("state %q, want %q", s, c.state)
			}
			if s := rawStrings(got.AuthChain); fmt.Sprint(s) != fmt.Sprint(c.chain) {
				t.Errorf("auth_chain %q, want %q", s, c.chain)
			}
			if string(got.Event) != c.event {
				t.Errorf("event %q, want %q", got.Event, c.event)
			}
		})
	}
}

func rawStrings(rs []json.RawMessage) []string {
	var out []string
	for _, r := range rs {
		out = append(out, string(r))
	}
	return out
}

// FuzzParseSendJoin: no panic on any input, and wherever encoding/json
// accepts the answer the fast pass finds the same PDUs.
func FuzzParseSendJoin(f *testing.F) {
	for _, s := range []string{`{}`, `{"state":[{"a":1}],"auth_chain":[],"event":{"x":"y"}}`,
		`{"state":[{"a":"\"]}"}],"origin":"o","servers_in_room":["a"]}`, `{"state":null}`, `{"State":[1]}`,
		`{"state":[{]}`, `{"state":[1 2]}`, `{"a":tru}`, `{"state":["\\"]}`, ` {"auth_chain" : [ [ ] ] } `} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var fast sendJoinResp
		if !scanSendJoin(b, &fast) {
			_, _ = parseSendJoin(b)
			return
		}
		var slow sendJoinResp
		if json.Unmarshal(b, &slow) != nil {
			return // structurally sound but not JSON: each PDU is parsed later
		}
		same := func(a, b []json.RawMessage) bool {
			if len(a) != len(b) {
				return false
			}
			for i := range a {
				if !bytes.Equal(a[i], b[i]) {
					return false
				}
			}
			return true
		}
		if !same(fast.State, slow.State) || !same(fast.AuthChain, slow.AuthChain) || !bytes.Equal(fast.Event, slow.Event) {
			t.Fatalf("fast %q %q %q\nslow %q %q %q", fast.State, fast.AuthChain, fast.Event, slow.State, slow.AuthChain, slow.Event)
		}
	})
}

// BenchmarkParseSendJoin: the send_join answer of a room of 10,000 members.
func BenchmarkParseSendJoin(b *testing.B) {
	var sb strings.Builder
	sb.WriteString(`{"origin":"a","members_omitted":false,"state":[`)
	for i := 0; i < 10000; i++ {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, `{"auth_events":["$aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","$bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"],"content":{"displayname":"Member %05d","membership":"join"},"depth":%d,"hashes":{"sha256":"zbJY0ddGIDDTp5EC2tXVBsrGGKmJm2L8zk1kEpjC3h8"},"origin_server_ts":1795308034691,"prev_events":["$ddddddddddddddddddddddddddddddddddddddddddd"],"room_id":"!BFhfXzzIW23hizYyq18bFrM3niwZR0vGh8Al451XLn0","sender":"@m%05d:a","signatures":{"a":{"ed25519:a_abcd":"QUkgZ2VuZXJhdGVkIHNpZ25hdHVyZSBwbGFjZWhvbGRlciBmb3IgdGVzdGluZyBwdXJwb3NlcyBvbmx5ISE"}},"state_key":"@m%05d:a","type":"m.room.member"}`, i, i, i, i)
	}
	sb.WriteString(`],"auth_chain":[],"servers_in_room":["a"]}`)
	body := []byte(sb.String())
	b.Run("scan", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(body)))
		for i := 0; i < b.N; i++ {
			if r, err := parseSendJoin(body); err != nil || len(r.State) != 10000 {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(body)))
		for i := 0; i < b.N; i++ {
			var r sendJoinResp
			if err := json.Unmarshal(body, &r); err != nil || len(r.State) != 10000 {
				b.Fatal(err)
			}
		}
	})
}
