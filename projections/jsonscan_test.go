package projections

import (
	"encoding/json"
	"strings"
	"testing"
)

// refContentString is what the search fold asked encoding/json before
// contentString: the reference contentString must agree with.
func refContentString(pdu []byte, member string) (string, bool) {
	var ev struct {
		Content map[string]json.RawMessage `json:"content"`
	}
	if json.Unmarshal(pdu, &ev) != nil {
		return "", false
	}
	var text string
	if json.Unmarshal(ev.Content[member], &text) != nil {
		return "", false
	}
	return text, true
}

var contentStringCases = []struct {
	in   string
	want string
	ok   bool
}{
	{`{"content":{"body":"hello","msgtype":"m.text"},"type":"m.room.message"}`, "hello", true},
	{` { "type" : "x" , "content" : { "a" : [1, -2.5e+3, {"body": "no"}], "body" : "yes" } } `, "yes", true},
	{`{"content":{"body":"a\"b\\c\/d\b\f\n\r\t\u00e9\ud83d\ude00"}}`, "a\"b\\c/d\b\f\n\r\té😀", true},
	{`{"content":{"body":"\ud83d x \ude00 \ud83d\u0041"}}`, "\uFFFD x \uFFFD \uFFFDA", true},
	{"{\"content\":{\"body\":\"bad \xff utf8 \xed\xa0\x80\"}}", "bad \uFFFD utf8 \uFFFD\uFFFD\uFFFD", true},
	{`{"content":{"b\u006fdy":"escaped key"}}`, "escaped key", true},
	{`{"CoNtEnT":{"body":"folded field"}}`, "folded field", true},
	{`{"\u0063ontent":{"body":"escaped field"}}`, "escaped field", true},
	{`{"content":{"Body":"map keys are exact"}}`, "", false},
	{`{"content":{"body":"first"},"content":{"other":1}}`, "first", true},
	{`{"content":{"body":"first"},"content":{"body":"second"}}`, "second", true},
	{`{"content":{"body":"first"},"content":null,"content":{"x":1}}`, "", false},
	{`{"content":{"body":"first"},"content":null}`, "", false},
	{`{"content":{"body":null}}`, "", true},
	{`{"content":{"body":1}}`, "", false},
	{`{"content":{"body":{"a":"b"}}}`, "", false},
	{`{"content":"str"}`, "", false},
	{`{"content":[{"body":"x"}]}`, "", false},
	{`{"content":{"body":"x"},"other":tru}`, "", false},
	{`{"content":{"body":"x"}} x`, "", false},
	{`{"content":{"body":"x"},}`, "", false},
	{`{"content":{"body":"x" "y"}}`, "", false},
	{`{"content":{"body":"x"},"n":01}`, "", false},
	{`{"content":{"body":"x"},"n":-}`, "", false},
	{`{"content":{"body":"x"},"n":1.}`, "", false},
	{`{"content":{"body":"x"},"n":1e}`, "", false},
	{"{\"content\":{\"body\":\"tab\there\"}}", "", false},
	{`{"content":{"body":"\x"}}`, "", false},
	{`{"content":{"body":"\u12"}}`, "", false},
	{`["content"]`, "", false},
	{`null`, "", false},
	{``, "", false},
	{`{"content":{"body":"x"}`, "", false},
	{`{"a":` + strings.Repeat("[", 9999) + strings.Repeat("]", 9999) + `,"content":{"body":"deep"}}`, "deep", true},
	{`{"a":` + strings.Repeat("[", 10000) + strings.Repeat("]", 10000) + `,"content":{"body":"too deep"}}`, "", false},
}

func TestContentString(t *testing.T) {
	for i, c := range contentStringCases {
		got, ok := contentString(nil, []byte(c.in), "body")
		if string(got) != c.want || ok != c.ok {
			t.Errorf("case %d: got %q %v, want %q %v", i, got, ok, c.want, c.ok)
		}
		ref, refOK := refContentString([]byte(c.in), "body")
		if ref != string(got) || refOK != ok {
			t.Errorf("case %d: encoding/json says %q %v, contentString %q %v", i, ref, refOK, got, ok)
		}
	}
}

func TestContentStringAllocs(t *testing.T) {
	pdu := []byte(`{"auth_events":["$a","$b"],"content":{"body":"hello \u00e9 world","msgtype":"m.text"},"depth":12,"hashes":{"sha256":"x"},"type":"m.room.message"}`)
	buf := make([]byte, 0, 64)
	if n := testing.AllocsPerRun(100, func() { contentString(buf[:0], pdu, "body") }); n != 0 {
		t.Errorf("contentString allocates %v times", n)
	}
}

func FuzzContentString(f *testing.F) {
	for _, c := range contentStringCases {
		f.Add([]byte(c.in))
	}
	f.Fuzz(func(t *testing.T, pdu []byte) {
		got, ok := contentString(nil, pdu, "body")
		ref, refOK := refContentString(pdu, "body")
		if ok != refOK || string(got) != ref {
			t.Fatalf("%q: contentString %q %v, encoding/json %q %v", pdu, got, ok, ref, refOK)
		}
	})
}

// refCount is how the search fold counted tokens before searchScratch.
func refCount(toks []string) (order []string, counts map[string]uint16) {
	counts = map[string]uint16{}
	for _, t := range toks {
		if counts[t] == 0 {
			order = append(order, t)
		}
		if counts[t] < 0xffff {
			counts[t]++
		}
	}
	return order, counts
}

func checkTokens(t *testing.T, text string) {
	t.Helper()
	var sc searchScratch
	sc.toks, sc.ends = appendTokens(nil, nil, []byte(text))
	want := SearchTokens(text)
	if len(sc.ends) != len(want) {
		t.Fatalf("%q: %d tokens, SearchTokens %d", text, len(sc.ends), len(want))
	}
	for i, w := range want {
		if string(sc.tok(i)) != w {
			t.Fatalf("%q: token %d is %q, SearchTokens %q", text, i, sc.tok(i), w)
		}
	}
	sc.count()
	order, counts := refCount(want)
	if len(order) != len(sc.first) {
		t.Fatalf("%q: %d distinct tokens, want %d", text, len(sc.first), len(order))
	}
	for j, i := range sc.first {
		if string(sc.tok(i)) != order[j] || sc.counts[j] != counts[order[j]] {
			t.Fatalf("%q: distinct %d is %q x%d, want %q x%d", text, j, sc.tok(i), sc.counts[j], order[j], counts[order[j]])
		}
	}
}

func TestAppendTokens(t *testing.T) {
	long := strings.Repeat("word ", 40) // more distinct tokens than the linear limit
	for i := 0; i < 50; i++ {
		long += "w" + strings.Repeat("x", i) + " "
	}
	for _, s := range []string{
		"", "Hello, World! hello", "ÉCOLE école Straße İstanbul ǅ", "a\xffb\xc3", "x1y2 3z",
		strings.Repeat("a", 70) + " " + strings.Repeat("é", 40) + strings.Repeat("a", 5),
		strings.Repeat("a", 63) + "é" + "bc", long, strings.Repeat("a ", 70000),
	} {
		checkTokens(t, s)
	}
}

func FuzzAppendTokens(f *testing.F) {
	f.Add("Hello, World! hello")
	f.Add(strings.Repeat("a", 63) + "éb")
	f.Fuzz(func(t *testing.T, s string) { checkTokens(t, s) })
}

func refMember(obj []byte, key string) ([]byte, bool) {
	var m map[string]json.RawMessage
	if json.Unmarshal(obj, &m) != nil {
		return nil, false
	}
	v, ok := m[key]
	return v, ok && v != nil
}

func TestJSONMember(t *testing.T) {
	for i, c := range append(contentStringCases[:len(contentStringCases):len(contentStringCases)],
		struct {
			in, want string
			ok       bool
		}{` {"content" : {"a":1} , "content":  [1, "x"] } `, "", false}) {
		for _, key := range []string{"content", "CoNtEnT", "a"} {
			got, ok := jsonMember([]byte(c.in), key)
			want, wantOK := refMember([]byte(c.in), key)
			if ok != wantOK || string(got) != string(want) {
				t.Errorf("case %d key %q: jsonMember %q %v, encoding/json %q %v", i, key, got, ok, want, wantOK)
			}
			if ok {
				var ref string
				refErr := json.Unmarshal(got, &ref)
				s, sok := jsonStringValue(nil, got)
				if (refErr == nil) != sok || (sok && string(s) != ref) {
					t.Errorf("case %d key %q: jsonStringValue %q %v, encoding/json %q %v", i, key, s, sok, ref, refErr)
				}
			}
		}
	}
}

func FuzzJSONMember(f *testing.F) {
	for _, c := range contentStringCases {
		f.Add([]byte(c.in), "content")
	}
	f.Fuzz(func(t *testing.T, obj []byte, key string) {
		got, ok := jsonMember(obj, key)
		want, wantOK := refMember(obj, key)
		if ok != wantOK || string(got) != string(want) {
			t.Fatalf("%q key %q: jsonMember %q %v, encoding/json %q %v", obj, key, got, ok, want, wantOK)
		}
		if ok && len(got) > 0 && got[0] == '"' {
			var ref string
			if json.Unmarshal(got, &ref) == nil {
				if s, _ := jsonStringValue(nil, got); string(s) != ref {
					t.Fatalf("%q: jsonStringValue %q, encoding/json %q", got, s, ref)
				}
			}
		}
	})
}

var relatesToCases = []string{
	`{"origin_server_ts":1700000000000,"content":{"body":"+1","m.relates_to":{"rel_type":"m.annotation","event_id":"$p","key":"👍"}}}`,
	`{"content":{"m.new_content":{"body":"x"},"m.relates_to":{"rel_type":"m.replace","event_id":"$p"}},"origin_server_ts":-5}`,
	`{"content":{"m.relates_to":{"rel_type":"m.thread","event_id":"$\u0070","is_falling_back":true,"m.in_reply_to":{"event_id":"$q"}}}}`,
	`{"content":{"m.relates_to":null},"origin_server_ts":null}`,
	`{"content":null}`,
	`null`,
	`[1]`,
	`{"content":{"m.relates_to":{"rel_type":1,"event_id":"$p"}}}`,
	`{"content":{"m.relates_to":{"rel_type":null,"event_id":"$p"}}}`,
	`{"content":{"m.relates_to":{"REL_TYPE":"m.thread","event_id":"$p"}}}`,
	`{"Content":{"m.relates_to":{"rel_type":"m.thread","event_id":"$p"}}}`,
	`{"content":{"m.relates_to":{"rel_type":"m.thread","event_id":"$p"}},"content":{"x":1}}`,
	`{"content":{"m.relates_to":{"rel_type":"m.thread"},"m.relates_to":{"event_id":"$p"}}}`,
	`{"content":{"m.relates_to":{"rel_type":"m.thread","event_id":"$p"}},"origin_server_ts":1.5}`,
	`{"content":{"m.relates_to":{"rel_type":"m.thread","event_id":"$p"}},"origin_server_ts":99999999999999999999}`,
	`{"content":{"m.relates_to":{"rel_type":"m.thread","event_id":"$p"}},"origin_server_ts":"1"}`,
	`{"content":{"m.relates_to":[]}}`,
	`{"content":"x"}`,
	`{"content":{"m.relates_to":{"rel_type":"m.annotation","event_id":"$p","\u212Aey":"k"}}}`,
	`{"content":{"m.relates_to":{"rel_type":"m.annotation","event_id":"$p","key":"a\ud83d"}}} `,
	`{"content":{"m.relates_to":{"rel_type":"m.annotation","event_id":"$p","key":"k"}},}`,
	`{"content":{"m.new_content":null,"m.relates_to":{"rel_type":"m.replace","event_id":"$p"}}}`,
}

// checkRelatesTo: parseRelatesTo gives what json.Unmarshal into relatesTo
// gives, as far as relationOf looks.
func checkRelatesTo(t *testing.T, pdu []byte) {
	t.Helper()
	var want relatesTo
	wantOK := json.Unmarshal(pdu, &want) == nil && want.Content.RelatesTo != nil
	got, ok := parseRelatesTo(pdu)
	ok = ok && got.Content.RelatesTo != nil
	if ok != wantOK {
		t.Fatalf("%q: relation %v, encoding/json %v", pdu, ok, wantOK)
	}
	if !ok {
		return
	}
	isObj := func(b json.RawMessage) bool { return len(b) > 0 && b[0] == '{' }
	if *got.Content.RelatesTo != *want.Content.RelatesTo || got.OriginServerTS != want.OriginServerTS ||
		isObj(got.Content.NewContent) != isObj(want.Content.NewContent) {
		t.Fatalf("%q: %+v %+v, encoding/json %+v %+v", pdu, got, *got.Content.RelatesTo, want, *want.Content.RelatesTo)
	}
}

func TestParseRelatesTo(t *testing.T) {
	for _, c := range relatesToCases {
		checkRelatesTo(t, []byte(c))
	}
	for _, c := range contentStringCases {
		checkRelatesTo(t, []byte(c.in))
	}
	// The usual shapes take the fast path.
	if _, status := scanRelatesTo([]byte(relatesToCases[0])); status != scanOK {
		t.Errorf("annotation: status %d", status)
	}
}

func FuzzScanRelatesTo(f *testing.F) {
	for _, c := range relatesToCases {
		f.Add([]byte(c))
	}
	f.Fuzz(func(t *testing.T, pdu []byte) { checkRelatesTo(t, pdu) })
}
