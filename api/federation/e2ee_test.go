package federation

import (
	"errors"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

type fakeE2EE struct{ got []string }

func (e *fakeE2EE) FedKeysQuery(origin string, body []byte) ([]byte, int) {
	e.got = append(e.got, "query "+origin+" "+string(body))
	return []byte(`{"device_keys":{}}`), 200
}

func (e *fakeE2EE) FedKeysClaim(origin string, body []byte) ([]byte, int) {
	e.got = append(e.got, "claim "+origin+" "+string(body))
	return []byte(`{"one_time_keys":{}}`), 200
}

func (e *fakeE2EE) FedUserDevices(origin, user string) ([]byte, int) {
	e.got = append(e.got, "devices "+origin+" "+user)
	return []byte(`{"user_id":"` + user + `","stream_id":1,"devices":[]}`), 200
}

// TestE2EERoutes: the three E2EE queries are routed (authenticated), handed
// to the installed E2EE with the origin, refused for other servers' users
// and malformed bodies, and unrecognized without an E2EE.
func TestE2EERoutes(t *testing.T) {
	f := testFed(t, "a.example")
	run := func(path, method, body string) (int, string) {
		t.Helper()
		segs := strings.Split(strings.Trim(path, "/"), "/")
		for _, rt := range f.routes() {
			ps, ok := matchRoute(rt.parts, segs)
			if !ok || rt.method != method {
				continue
			}
			if !rt.authed {
				t.Fatalf("%s %s is not authenticated", method, path)
			}
			r := &req{ctx: &fasthttp.RequestCtx{}, f: f, params: ps, origin: "b.example", body: []byte(body)}
			if err := rt.h(r); err != nil {
				var fe *fedError
				if !errors.As(err, &fe) {
					t.Fatalf("non-Matrix error: %v", err)
				}
				return fe.status, fe.code
			}
			return r.ctx.Response.StatusCode(), string(r.ctx.Response.Body())
		}
		t.Fatalf("no route for %s %s", method, path)
		return 0, ""
	}
	const q, c, d = "/_matrix/federation/v1/user/keys/query", "/_matrix/federation/v1/user/keys/claim", "/_matrix/federation/v1/user/devices/"
	if st, code := run(q, "POST", `{}`); st != 404 || code != "M_UNRECOGNIZED" {
		t.Fatalf("without E2EE: %d %s", st, code)
	}
	e := &fakeE2EE{}
	f.SetE2EE(e)
	for _, tc := range []struct {
		path, method, body string
		status             int
		want               string
	}{
		{q, "POST", `{"device_keys":{"@a:a.example":[]}}`, 200, "device_keys"},
		{q, "POST", `{"device_keys":`, 400, "M_NOT_JSON"},
		{c, "POST", `{"one_time_keys":{}}`, 200, "one_time_keys"},
		{c, "POST", `nope`, 400, "M_NOT_JSON"},
		{d + "%40a%3Aa.example", "GET", "", 200, `"user_id":"@a:a.example"`},
		{d + "%40a%3Ab.example", "GET", "", 400, "M_INVALID_PARAM"},
		{d + "nobody", "GET", "", 400, "M_INVALID_PARAM"},
	} {
		st, body := run(tc.path, tc.method, tc.body)
		if st != tc.status || !strings.Contains(body, tc.want) {
			t.Errorf("%s %s %s: %d %s, want %d %s", tc.method, tc.path, tc.body, st, body, tc.status, tc.want)
		}
	}
	want := []string{"query b.example {\"device_keys\":{\"@a:a.example\":[]}}", "claim b.example {\"one_time_keys\":{}}", "devices b.example @a:a.example"}
	if strings.Join(e.got, "|") != strings.Join(want, "|") {
		t.Fatalf("calls: %q", e.got)
	}
}
