package dag

import (
	"bytes"
	"encoding/json"
	"errors"
	"math/big"
	"strings"
	"testing"
)

// The examples of the appendices, "Canonical JSON" -> "Examples".
func TestCanonicalSpecExamples(t *testing.T) {
	tests := []struct{ in, want string }{
		{`{}`, `{}`},
		{"{\n    \"one\": 1,\n    \"two\": \"Two\"\n}", `{"one":1,"two":"Two"}`},
		{"{\n    \"b\": \"2\",\n    \"a\": \"1\"\n}", `{"a":"1","b":"2"}`},
		{`{"b":"2","a":"1"}`, `{"a":"1","b":"2"}`},
		{`{
    "auth": {
        "success": true,
        "mxid": "@john.doe:example.com",
        "profile": {
            "display_name": "John Doe",
            "three_pids": [
                {
                    "medium": "email",
                    "address": "john.doe@example.org"
                },
                {
                    "medium": "msisdn",
                    "address": "123456789"
                }
            ]
        }
    }
}`, `{"auth":{"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe","three_pids":[{"address":"john.doe@example.org","medium":"email"},{"address":"123456789","medium":"msisdn"}]},"success":true}}`},
		{`{"a": "日本語"}`, `{"a":"日本語"}`},
		{`{"本": 2, "日": 1}`, `{"日":1,"本":2}`},
		{`{"a": "\u65E5"}`, `{"a":"日"}`},
		{`{"a": null}`, `{"a":null}`},
	}
	for _, tt := range tests {
		for _, strict := range []bool{false, true} {
			got, err := Canonical(nil, []byte(tt.in), strict)
			if err != nil {
				t.Errorf("Canonical(%s, strict=%v): %v", tt.in, strict, err)
				continue
			}
			if string(got) != tt.want {
				t.Errorf("Canonical(%s, strict=%v) = %s, want %s", tt.in, strict, got, tt.want)
			}
		}
	}
	// The last example uses -0 and an exponent, which only the lenient mode
	// (room versions 1-5) accepts.
	got, err := Canonical(nil, []byte(`{"a": -0, "b": 1e10}`), false)
	if err != nil || string(got) != `{"a":0,"b":10000000000}` {
		t.Errorf("lenient -0/1e10: got %s, %v", got, err)
	}
}

func TestCanonicalStrings(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"plain", `"abc"`, `"abc"`},
		{"quote and backslash", `"a\"b\\c"`, `"a\"b\\c"`},
		{"solidus unescaped", `"a\/b"`, `"a/b"`},
		{"short escapes", `"\b\f\n\r\t"`, `"\b\f\n\r\t"`},
		{"short escapes from \\u", `"\u0008\u000C\u000a\u000D\u0009"`, `"\b\f\n\r\t"`},
		{"other controls lowercase hex", `"\u0000\u0001\u001F\u001b"`, `"\u0000\u0001\u001f\u001b"`},
		{"DEL raw", `"\u007f"`, "\"\x7f\""},
		{"ascii escape decoded", `"\u0041\u005c\u0022"`, `"A\\\""`},
		{"non-ascii raw", `"\u00e9\u2028"`, "\"é\u2028\""},
		{"surrogate pair", `"\ud83d\ude00"`, `"😀"`},
		{"raw 4-byte", `"😀"`, `"😀"`},
		{"uppercase hex", `"\u00C9"`, `"É"`},
		{"U+FFFD literal", "\"\uFFFD\"", "\"\uFFFD\""},
	}
	for _, tt := range tests {
		got, err := Canonical(nil, []byte(tt.in), true)
		if err != nil {
			t.Errorf("%s: Canonical(%s): %v", tt.name, tt.in, err)
			continue
		}
		if string(got) != tt.want {
			t.Errorf("%s: Canonical(%s) = %q, want %q", tt.name, tt.in, got, tt.want)
		}
	}
}

func TestCanonicalKeyOrder(t *testing.T) {
	tests := []struct{ in, want string }{
		// Sorting is by code point, i.e. UTF-8 bytes, not UTF-16 units:
		// U+FF61 sorts before U+1F600 although its UTF-16 unit is larger.
		{`{"😀":1,"｡":2}`, `{"｡":2,"😀":1}`},
		// Escaped keys sort by their decoded value: '"' (0x22) < '#' (0x23)
		// although the encoded form starts with '\' (0x5c).
		{`{"#":1,"\"":2}`, `{"\"":2,"#":1}`},
		{`{"a\n":1,"a":2,"a\u0000":3}`, `{"a":2,"a\u0000":3,"a\n":1}`},
		{`{"b":{"d":1,"c":2},"a":[{"z":1,"y":2}]}`, `{"a":[{"y":2,"z":1}],"b":{"c":2,"d":1}}`},
		{`{"aa":1,"a":2,"":3}`, `{"":3,"a":2,"aa":1}`},
		{`{"B":1,"a":2,"A":3}`, `{"A":3,"B":1,"a":2}`},
	}
	for _, tt := range tests {
		got, err := Canonical(nil, []byte(tt.in), true)
		if err != nil || string(got) != tt.want {
			t.Errorf("Canonical(%s) = %s, %v; want %s", tt.in, got, err, tt.want)
		}
	}
}

func TestCanonicalNumbers(t *testing.T) {
	tests := []struct {
		in     string
		strict string // "" means error
		loose  string // "" means error
	}{
		{`0`, `0`, `0`},
		{`-0`, `0`, `0`},
		{`42`, `42`, `42`},
		{`-42`, `-42`, `-42`},
		{`9007199254740991`, `9007199254740991`, `9007199254740991`},
		{`-9007199254740991`, `-9007199254740991`, `-9007199254740991`},
		{`9007199254740992`, ``, `9007199254740992`},
		{`-9007199254740992`, ``, `-9007199254740992`},
		{`123456789012345678901234567890`, ``, `123456789012345678901234567890`},
		{`1.0`, ``, `1`},
		{`-0.0`, ``, `0`},
		{`1e10`, ``, `10000000000`},
		{`1E+2`, ``, `100`},
		{`150e-1`, ``, `15`},
		{`50.57`, ``, `50.57`},
		{`-0.5`, ``, `-0.5`},
		{`0.0001`, ``, `0.0001`},
		{`0.00001`, ``, `1e-05`},
		{`1e16`, ``, `1e+16`},
		{`9007199254740993.5`, ``, `9007199254740994.0`},
		{`1.5e300`, ``, `1.5e+300`},
		{`1e400`, ``, ``},
		{`01`, ``, ``},
		{`-`, ``, ``},
		{`1.`, ``, ``},
		{`.5`, ``, ``},
		{`1e`, ``, ``},
		{`+1`, ``, ``},
		{`0x10`, ``, ``},
	}
	for _, tt := range tests {
		for _, mode := range []struct {
			strict bool
			want   string
		}{{true, tt.strict}, {false, tt.loose}} {
			got, err := Canonical(nil, []byte(tt.in), mode.strict)
			if mode.want == "" {
				if err == nil {
					t.Errorf("Canonical(%s, strict=%v) = %s, want error", tt.in, mode.strict, got)
				} else if !errors.Is(err, ErrBadJSON) {
					t.Errorf("Canonical(%s): error %v does not wrap ErrBadJSON", tt.in, err)
				}
				continue
			}
			if err != nil || string(got) != mode.want {
				t.Errorf("Canonical(%s, strict=%v) = %s, %v; want %s", tt.in, mode.strict, got, err, mode.want)
			}
		}
	}
}

func TestCanonicalErrors(t *testing.T) {
	tests := []struct{ name, in, msg string }{
		{"empty", ``, "unexpected end"},
		{"only space", `  `, "unexpected end"},
		{"trailing", `{} x`, "after the top-level value"},
		{"two values", `1 2`, "after the top-level value"},
		{"duplicate key", `{"a":1,"a":2}`, "duplicate key"},
		{"duplicate key unsorted", `{"b":1,"a":1,"b":2}`, "duplicate key"},
		{"duplicate via escape", `{"a":1,"\u0061":2}`, "duplicate key"},
		{"invalid utf8", "\"\xff\"", "invalid UTF-8"},
		{"overlong utf8", "\"\xc0\xaf\"", "invalid UTF-8"},
		{"utf8 surrogate", "\"\xed\xa0\x80\"", "invalid UTF-8"},
		{"truncated utf8", "\"\xe6\x97\"", "invalid UTF-8"},
		{"lone high surrogate", `"\ud800"`, "lone high surrogate"},
		{"high then other", `"\ud800\u0041"`, "lone high surrogate"},
		{"lone low surrogate", `"\udc00"`, "lone low surrogate"},
		{"raw control", "\"a\nb\"", "control character"},
		{"bad escape", `"\x"`, "invalid escape"},
		{"short unicode", `"\u12"`, "invalid \\u escape"},
		{"unterminated string", `"abc`, "unterminated string"},
		{"unterminated object", `{"a":1`, "unterminated object"},
		{"unterminated array", `[1,2`, "unterminated array"},
		{"trailing comma object", `{"a":1,}`, "expected object key"},
		{"trailing comma array", `[1,]`, "invalid character"},
		{"missing colon", `{"a" 1}`, "expected ':'"},
		{"non-string key", `{1:2}`, "expected object key"},
		{"bad literal", `tru`, "invalid literal"},
		{"NaN", `NaN`, "invalid character"},
		{"single quotes", `{'a':1}`, "expected object key"},
		{"too deep", strings.Repeat("[", MaxNesting+1) + strings.Repeat("]", MaxNesting+1), "nesting too deep"},
		{"vertical tab whitespace", "\v{}", "invalid character"},
	}
	for _, tt := range tests {
		_, err := Canonical(nil, []byte(tt.in), false)
		if err == nil {
			t.Errorf("%s: Canonical(%q) succeeded, want error", tt.name, tt.in)
			continue
		}
		if !errors.Is(err, ErrBadJSON) || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("%s: Canonical(%q) error %q, want ErrBadJSON mentioning %q", tt.name, tt.in, err, tt.msg)
		}
	}
	ok := strings.Repeat("[", MaxNesting) + strings.Repeat("]", MaxNesting)
	if _, err := Canonical(nil, []byte(ok), true); err != nil {
		t.Errorf("nesting at the limit: %v", err)
	}
}

func TestCanonicalAppendsAndKeepsDstOnError(t *testing.T) {
	dst := []byte("prefix:")
	out, err := Canonical(dst, []byte(`{"b":1,"a":2}`), true)
	if err != nil || string(out) != `prefix:{"a":2,"b":1}` {
		t.Fatalf("got %s, %v", out, err)
	}
	out, err = Canonical(dst, []byte(`{"b":1,`), true)
	if err == nil || string(out) != "prefix:" {
		t.Fatalf("on error got %q, %v; want dst unchanged", out, err)
	}
}

func TestCanonicalValue(t *testing.T) {
	v := map[string]any{"z": []int{3, 1}, "a": "<&>", "m": map[string]bool{"y": true, "x": false}}
	got, err := CanonicalValue(v)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"a":"<&>","m":{"x":false,"y":true},"z":[3,1]}`; string(got) != want {
		t.Errorf("CanonicalValue = %s, want %s", got, want)
	}
	if _, err := CanonicalValue(1.5); err == nil {
		t.Error("CanonicalValue(1.5) succeeded; floats are not canonical")
	}
	if _, err := CanonicalValue(make(chan int)); !errors.Is(err, ErrBadJSON) {
		t.Errorf("CanonicalValue(chan) = %v, want ErrBadJSON", err)
	}
	if !IsCanonical(got) || IsCanonical([]byte(`{"b":1,"a":2}`)) || IsCanonical([]byte(`{ }`)) {
		t.Error("IsCanonical gives wrong answers")
	}
}

func FuzzCanonical(f *testing.F) {
	for _, s := range []string{
		`{}`, `[]`, `null`, `true`, `0`, `-0`, `1e10`, `1.5`, `"x"`,
		`{"b":"2","a":"1"}`, `{"a":{"c":[1,2,{"e":null,"d":false}]},"b":-12}`,
		`"\ud83d\ude00\u0000\n\"\\\/"`, `{"本":2,"日":1}`, `{"\"":1,"#":2}`,
		`9007199254740992`, `1e400`, `[1.0, 50.57, 1e16, 0.00001]`, "{\"a\":\"\xff\"}",
		string(messageEventJSON),
		`"\u001f\u001F\u0008\b"`, `{"a\n":1,"a":2}`, `[-0,01,-1,9007199254740991,-9007199254740991]`,
		`{"a":1,"a":1}`, `{"b":1,"a":1}`, "{\"a\":[true,false,null],\"b\":{}}",
	} {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
	}
	f.Fuzz(func(t *testing.T, in []byte, strict bool) {
		// The fast path says yes only to what the general path copies
		// unchanged in both modes, and to all of that without escapes.
		general, gerr := canonicalise(nil, in, strict)
		unchanged := gerr == nil && bytes.Equal(general, in)
		if fast := alreadyCanonical(in); fast && !unchanged {
			t.Fatalf("fast path accepts %q, general path gives %q, %v (strict %v)", in, general, gerr, strict)
		} else if !fast && unchanged && strict && bytes.IndexByte(in, '\\') < 0 {
			t.Fatalf("fast path refuses canonical %q", in)
		}
		out, err := Canonical(nil, in, strict)
		if err != nil {
			if !errors.Is(err, ErrBadJSON) {
				t.Fatalf("error %v does not wrap ErrBadJSON", err)
			}
			return
		}
		again, err := Canonical(nil, out, strict)
		if err != nil {
			t.Fatalf("canonical output %q rejected: %v", out, err)
		}
		if !bytes.Equal(again, out) {
			t.Fatalf("not idempotent: %q -> %q -> %q", in, out, again)
		}
		if !json.Valid(out) {
			t.Fatalf("output %q is not valid JSON", out)
		}
		var a, b any
		if err := decodeNumbers(in, &a); err != nil {
			t.Fatalf("encoding/json rejects input %q we accepted: %v", in, err)
		}
		if err := decodeNumbers(out, &b); err != nil {
			t.Fatalf("encoding/json rejects output %q: %v", out, err)
		}
		if !sameJSON(a, b) {
			t.Fatalf("meaning changed: %q -> %q", in, out)
		}
	})
}

func decodeNumbers(b []byte, v *any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	return d.Decode(v)
}

// sameJSON compares decoded JSON values; integers exactly, other numbers as
// float64 (the lenient mode rewrites them to their shortest float form).
func sameJSON(a, b any) bool {
	switch a := a.(type) {
	case map[string]any:
		b, ok := b.(map[string]any)
		if !ok || len(a) != len(b) {
			return false
		}
		for k, v := range a {
			w, ok := b[k]
			if !ok || !sameJSON(v, w) {
				return false
			}
		}
		return true
	case []any:
		b, ok := b.([]any)
		if !ok || len(a) != len(b) {
			return false
		}
		for i := range a {
			if !sameJSON(a[i], b[i]) {
				return false
			}
		}
		return true
	case json.Number:
		b, ok := b.(json.Number)
		if !ok {
			return false
		}
		if !strings.ContainsAny(string(a), ".eE") && !strings.ContainsAny(string(b), ".eE") {
			x, _ := new(big.Int).SetString(string(a), 10)
			y, _ := new(big.Int).SetString(string(b), 10)
			return x != nil && y != nil && x.Cmp(y) == 0
		}
		x, err1 := a.Float64()
		y, err2 := b.Float64()
		return err1 == nil && err2 == nil && x == y
	default:
		return a == b
	}
}

// messageEventJSON is a typical m.room.message PDU as another server sends
// it: canonical, signed (by the spec test key as example.org, ed25519:1),
// with unsigned data added in transit. It is benchProto built in v12.
var messageEventJSON = []byte(`{"auth_events":["$UB3Vd8oK1prbm7aBvwgpKeCZgzbnWwb8mqbX3fOQOKg","$MjsE8HfVt3jOdVNEwrVvRUHoc7W8cGzkIPsgx5Xvv3Y"],"content":{"body":"Hello there! Has anyone tried the new build yet? It seems a lot faster.","format":"org.matrix.custom.html","formatted_body":"<p>Hello there! Has anyone tried the <b>new build</b> yet?</p>","m.mentions":{},"msgtype":"m.text"},"depth":1234,"hashes":{"sha256":"dgMs1kz0Z3+fxzOOG9NtkzVyCBS7yyYo/3FsctzXoc8"},"origin_server_ts":1718040000000,"prev_events":["$yEvX4xRQzmj7NTkKX6AoGZWUS8PT8WBCwGEqGcp6DGE"],"room_id":"!Nhcu5BS-UMnFX7hBVfVSoXiD7OgH6iRT-xyIuqDnpYQ","sender":"@alice:example.org","signatures":{"example.org":{"ed25519:1":"sC6+VVQojMZifHEs0aQ/O9iY6soSh9/eMhuMWbBgdurdTOXkfwtifPI9X3SIlGSeZIQQJN3XhDcwgO+CsIdWDA"}},"type":"m.room.message","unsigned":{"age":4612}}`)

func TestMessageEventFixture(t *testing.T) {
	ev, err := ParseEvent(messageEventJSON, &RoomV12)
	if err != nil {
		t.Fatal(err)
	}
	if err := ev.CheckContentHash(); err != nil {
		t.Error(err)
	}
	k := specKey(t)
	if err := ev.VerifySignature("example.org", k.ID, k.Public()); err != nil {
		t.Error(err)
	}
}

func BenchmarkCanonicalMessageEvent(b *testing.B) {
	dst := make([]byte, 0, 2048)
	b.SetBytes(int64(len(messageEventJSON)))
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if dst, err = Canonical(dst[:0], messageEventJSON, true); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCanonicalUnsorted measures the reordering path: the same event
// pretty-printed with its keys in reverse order.
func BenchmarkCanonicalUnsorted(b *testing.B) {
	var m map[string]any
	if err := json.Unmarshal(messageEventJSON, &m); err != nil {
		b.Fatal(err)
	}
	in := reverseKeys(m)
	dst := make([]byte, 0, 2048)
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if dst, err = Canonical(dst[:0], in, true); err != nil {
			b.Fatal(err)
		}
	}
}

// reverseKeys encodes m with object keys in reverse order and some spaces.
func reverseKeys(v any) []byte {
	var enc func(buf *bytes.Buffer, v any)
	enc = func(buf *bytes.Buffer, v any) {
		switch v := v.(type) {
		case map[string]any:
			keys := make([]string, 0, len(v))
			for k := range v {
				keys = append(keys, k)
			}
			// reverse sorted
			for i := 0; i < len(keys); i++ {
				for j := i + 1; j < len(keys); j++ {
					if keys[j] > keys[i] {
						keys[i], keys[j] = keys[j], keys[i]
					}
				}
			}
			buf.WriteString("{ ")
			for i, k := range keys {
				if i > 0 {
					buf.WriteString(", ")
				}
				kb, _ := json.Marshal(k)
				buf.Write(kb)
				buf.WriteString(": ")
				enc(buf, v[k])
			}
			buf.WriteString(" }")
		case []any:
			buf.WriteByte('[')
			for i, e := range v {
				if i > 0 {
					buf.WriteString(", ")
				}
				enc(buf, e)
			}
			buf.WriteByte(']')
		default:
			b, _ := json.Marshal(v)
			buf.Write(b)
		}
	}
	var buf bytes.Buffer
	enc(&buf, v)
	return buf.Bytes()
}

func TestCanonicalReversedMatches(t *testing.T) {
	var m map[string]any
	if err := json.Unmarshal(messageEventJSON, &m); err != nil {
		t.Fatal(err)
	}
	got, err := Canonical(nil, reverseKeys(m), true)
	if err != nil || !bytes.Equal(got, messageEventJSON) {
		t.Fatalf("reversed event canonicalises to %s, %v", got, err)
	}
}
