package api

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"
)

// Tests of the account endpoints: registration, login, tokens, devices,
// password, deactivation, UIA, discovery. Profiles, rate limits and the
// admin APIs have their own files.

// doH is ts.do that also returns the response headers.
func (ts *testServer) doH(method, path, token, body string) (resp, http.Header) {
	ts.t.Helper()
	req, err := http.NewRequest(method, ts.url+path, strings.NewReader(body))
	if err != nil {
		ts.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		ts.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return resp{res.StatusCode, b}, res.Header
}

func (r resp) obj(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("not a JSON object: %s", r.body)
	}
	return m
}

// login logs a user in with a password and returns the token and device.
func (ts *testServer) login(user, password string) (string, string) {
	ts.t.Helper()
	r := ts.do("POST", "/_matrix/client/v3/login", "", fmt.Sprintf(`{"type":"m.login.password","identifier":{"type":"m.id.user","user":%q},"password":%q}`, user, password))
	if r.status != 200 {
		ts.t.Fatalf("login %s: %d %s", user, r.status, r.body)
	}
	return r.field("access_token"), r.field("device_id")
}

// withPassword completes a password UIA for a request body (a JSON object
// without its closing brace joined with the auth).
func withAuth(body, session, user, password string) string {
	auth := fmt.Sprintf(`"auth":{"type":"m.login.password","session":%q,"identifier":{"type":"m.id.user","user":%q},"password":%q}`, session, user, password)
	body = strings.TrimSpace(body)
	if body == "" || body == "{}" {
		return "{" + auth + "}"
	}
	return strings.TrimSuffix(body, "}") + "," + auth + "}"
}

// uiaDo runs a request through the password stage: first without auth (it
// must answer the spec's 401), then with the password.
func (ts *testServer) uiaDo(method, path, token, body, user, password string) resp {
	ts.t.Helper()
	first := ts.do(method, path, token, body)
	if first.status != 401 {
		ts.t.Fatalf("%s %s without auth: %d %s", method, path, first.status, first.body)
	}
	return ts.do(method, path, token, withAuth(body, first.field("session"), user, password))
}

type errCase struct {
	name, method, path, token, body string
	status                          int
	code                            string
}

func runErrCases(t *testing.T, ts *testServer, cases []errCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := ts.do(c.method, c.path, c.token, c.body)
			if r.status != c.status || r.errcode() != c.code {
				t.Errorf("got %d %s, want %d %s", r.status, r.body, c.status, c.code)
			}
		})
	}
}

func TestRegisterUIAFlowShape(t *testing.T) {
	ts := newTestServer(t, Config{EnableRegistration: true})
	r := ts.do("POST", "/_matrix/client/v3/register", "", `{"username":"ann","password":"pw"}`)
	if r.status != 401 {
		t.Fatalf("got %d %s", r.status, r.body)
	}
	m := r.obj(t)
	sess, _ := m["session"].(string)
	want := map[string]any{"flows": []any{map[string]any{"stages": []any{"m.login.dummy"}}}, "params": map[string]any{}, "session": sess}
	if sess == "" || !reflect.DeepEqual(m, want) {
		t.Fatalf("401 body %s", r.body)
	}
	// The password given first is kept: the second request may omit it.
	r = ts.do("POST", "/_matrix/client/v3/register", "", fmt.Sprintf(`{"username":"ann","auth":{"type":"m.login.dummy","session":%q}}`, sess))
	if r.status != 200 || r.field("user_id") != "@ann:test.local" || r.field("access_token") == "" || r.field("device_id") == "" {
		t.Fatalf("register: %d %s", r.status, r.body)
	}
	ts.login("ann", "pw")
	// A request carrying only "auth" continues with the parameters given
	// before (Synapse keeps them in the session).
	f := ts.do("POST", "/_matrix/client/v3/register", "", `{"username":"bea","password":"pw2","device_id":"BEADEV"}`)
	r = ts.do("POST", "/_matrix/client/v3/register", "", fmt.Sprintf(`{"auth":{"type":"m.login.dummy","session":%q}}`, f.field("session")))
	if r.status != 200 || r.field("user_id") != "@bea:test.local" || r.field("device_id") != "BEADEV" {
		t.Fatalf("register with stored params: %d %s", r.status, r.body)
	}
	ts.login("bea", "pw2")
	// A completed session is gone.
	r = ts.do("POST", "/_matrix/client/v3/register", "", fmt.Sprintf(`{"username":"ann2","password":"pw","auth":{"type":"m.login.dummy","session":%q}}`, sess))
	if r.status != 400 || r.errcode() != "M_UNKNOWN" {
		t.Fatalf("reused session: %d %s", r.status, r.body)
	}
}

func TestRegister(t *testing.T) {
	ts := newTestServer(t, Config{EnableRegistration: true})
	ts.register("taken")
	reg := "/_matrix/client/v3/register"
	dummy := `"auth":{"type":"m.login.dummy"}`
	runErrCases(t, ts, []errCase{
		{"guest", "POST", reg + "?kind=guest", "", `{}`, 403, "M_GUEST_ACCESS_FORBIDDEN"},
		{"bad kind", "POST", reg + "?kind=robot", "", `{}`, 400, "M_INVALID_PARAM"},
		{"not json", "POST", reg, "", `{"username":`, 400, "M_NOT_JSON"},
		{"bad json", "POST", reg, "", `{"username":7}`, 400, "M_BAD_JSON"},
		{"in use", "POST", reg, "", `{"username":"taken","password":"pw",` + dummy + `}`, 400, "M_USER_IN_USE"},
		{"in use uppercase", "POST", reg, "", `{"username":"TAKEN","password":"pw"}`, 400, "M_USER_IN_USE"},
		{"invalid", "POST", reg, "", `{"username":"a b","password":"pw"}`, 400, "M_INVALID_USERNAME"},
		{"empty", "POST", reg, "", `{"username":"","password":"pw"}`, 400, "M_INVALID_USERNAME"},
		{"numeric", "POST", reg, "", `{"username":"12345","password":"pw"}`, 400, "M_INVALID_USERNAME"},
		{"underscore", "POST", reg, "", `{"username":"_bridge","password":"pw"}`, 400, "M_INVALID_USERNAME"},
		{"no password", "POST", reg, "", `{"username":"nopw",` + dummy + `}`, 400, "M_MISSING_PARAM"},
		{"long password", "POST", reg, "", `{"username":"lpw","password":"` + strings.Repeat("x", 513) + `"}`, 400, "M_INVALID_PARAM"},
		{"unknown session", "POST", reg, "", `{"username":"x1","password":"pw","auth":{"type":"m.login.dummy","session":"nope"}}`, 400, "M_UNKNOWN"},
		{"unknown stage", "POST", reg, "", `{"username":"x2","password":"pw","auth":{"type":"m.login.recaptcha"}}`, 400, "M_UNKNOWN"},
		{"long device name", "POST", reg, "", `{"username":"x3","password":"pw","initial_device_display_name":"` + strings.Repeat("d", 101) + `",` + dummy + `}`, 400, "M_TOO_LARGE"},
		{"available taken", "GET", "/_matrix/client/v3/register/available?username=taken", "", ``, 400, "M_USER_IN_USE"},
		{"available invalid", "GET", "/_matrix/client/v3/register/available?username=Bad!", "", ``, 400, "M_INVALID_USERNAME"},
		{"available missing", "GET", "/_matrix/client/v3/register/available", "", ``, 400, "M_MISSING_PARAM"},
	})

	t.Run("single shot dummy", func(t *testing.T) {
		// Complement and many bots send the dummy stage with no session.
		r := ts.do("POST", reg, "", `{"username":"Solo","password":"pw",`+dummy+`}`)
		if r.status != 200 || r.field("user_id") != "@solo:test.local" {
			t.Fatalf("%d %s", r.status, r.body)
		}
	})
	t.Run("inhibit login", func(t *testing.T) {
		r := ts.do("POST", reg, "", `{"username":"quiet","password":"pw","inhibit_login":true,`+dummy+`}`)
		m := r.obj(t)
		if r.status != 200 || m["access_token"] != nil || m["device_id"] != nil || m["user_id"] != "@quiet:test.local" {
			t.Fatalf("%d %s", r.status, r.body)
		}
	})
	t.Run("no username", func(t *testing.T) {
		r := ts.do("POST", reg, "", `{"password":"pw",`+dummy+`}`)
		if r.status != 200 || !strings.HasPrefix(r.field("user_id"), "@") {
			t.Fatalf("%d %s", r.status, r.body)
		}
	})
	t.Run("available", func(t *testing.T) {
		r := ts.do("GET", "/_matrix/client/v3/register/available?username=free", "", "")
		if r.status != 200 || string(r.body) != `{"available":true}` {
			t.Fatalf("%d %s", r.status, r.body)
		}
	})
	t.Run("device id and name", func(t *testing.T) {
		r := ts.do("POST", reg, "", `{"username":"dev","password":"pw","device_id":"MYDEV","initial_device_display_name":"Phone",`+dummy+`}`)
		if r.field("device_id") != "MYDEV" {
			t.Fatalf("%s", r.body)
		}
		d := ts.do("GET", "/_matrix/client/v3/devices/MYDEV", r.field("access_token"), "")
		if d.field("display_name") != "Phone" {
			t.Fatalf("device: %s", d.body)
		}
	})
}

func TestLogin(t *testing.T) {
	ts := newTestServer(t, Config{EnableRegistration: true})
	ts.register("carol")
	login := "/_matrix/client/v3/login"
	ok := []struct{ name, body string }{
		{"user id", `{"type":"m.login.password","identifier":{"type":"m.id.user","user":"@carol:test.local"},"password":"pw"}`},
		{"localpart", `{"type":"m.login.password","identifier":{"type":"m.id.user","user":"carol"},"password":"pw"}`},
		{"uppercase localpart", `{"type":"m.login.password","identifier":{"type":"m.id.user","user":"CAROL"},"password":"pw"}`},
		{"uppercase user id", `{"type":"m.login.password","identifier":{"type":"m.id.user","user":"@Carol:test.local"},"password":"pw"}`},
		{"legacy user", `{"type":"m.login.password","user":"carol","password":"pw"}`},
	}
	for _, c := range ok {
		t.Run(c.name, func(t *testing.T) {
			r := ts.do("POST", login, "", c.body)
			if r.status != 200 || r.field("user_id") != "@carol:test.local" || r.field("access_token") == "" || r.field("home_server") != "test.local" {
				t.Fatalf("%d %s", r.status, r.body)
			}
			who := ts.do("GET", "/_matrix/client/v3/account/whoami", r.field("access_token"), "")
			m := who.obj(t)
			if m["user_id"] != "@carol:test.local" || m["device_id"] != r.field("device_id") || m["is_guest"] != false {
				t.Fatalf("whoami %s", who.body)
			}
		})
	}
	runErrCases(t, ts, []errCase{
		{"wrong password", "POST", login, "", `{"type":"m.login.password","identifier":{"type":"m.id.user","user":"carol"},"password":"nope"}`, 403, "M_FORBIDDEN"},
		{"unknown user", "POST", login, "", `{"type":"m.login.password","identifier":{"type":"m.id.user","user":"nobody"},"password":"pw"}`, 403, "M_FORBIDDEN"},
		{"remote user", "POST", login, "", `{"type":"m.login.password","identifier":{"type":"m.id.user","user":"@carol:elsewhere"},"password":"pw"}`, 403, "M_FORBIDDEN"},
		{"email", "POST", login, "", `{"type":"m.login.password","identifier":{"type":"m.id.thirdparty","medium":"email","address":"c@example.com"},"password":"pw"}`, 403, "M_FORBIDDEN"},
		{"untyped 3pid", "POST", login, "", `{"type":"m.login.password","identifier":{"medium":"email","address":"c@example.com"},"password":"pw"}`, 403, "M_FORBIDDEN"},
		{"legacy 3pid", "POST", login, "", `{"type":"m.login.password","medium":"email","address":"c@example.com","password":"pw"}`, 403, "M_FORBIDDEN"},
		{"phone", "POST", login, "", `{"type":"m.login.password","identifier":{"type":"m.id.phone","country":"GB","phone":"123"},"password":"pw"}`, 403, "M_FORBIDDEN"},
		{"bad 3pid", "POST", login, "", `{"type":"m.login.password","identifier":{"type":"m.id.thirdparty","medium":"email"},"password":"pw"}`, 400, "M_INVALID_PARAM"},
		{"unknown identifier", "POST", login, "", `{"type":"m.login.password","identifier":{"type":"m.id.carrier_pigeon"},"password":"pw"}`, 400, "M_UNKNOWN"},
		{"no user", "POST", login, "", `{"type":"m.login.password","password":"pw"}`, 400, "M_MISSING_PARAM"},
		{"no password", "POST", login, "", `{"type":"m.login.password","user":"carol"}`, 400, "M_INVALID_PARAM"},
		{"unknown type", "POST", login, "", `{"type":"m.login.fingerprint"}`, 400, "M_UNKNOWN"},
		{"token login off", "POST", login, "", `{"type":"m.login.token","token":"x"}`, 400, "M_UNKNOWN"},
		{"no type", "POST", login, "", `{}`, 400, "M_BAD_JSON"},
		{"not json", "POST", login, "", `{`, 400, "M_NOT_JSON"},
		{"bad json", "POST", login, "", `{"type":1}`, 400, "M_BAD_JSON"},
		{"long device name", "POST", login, "", `{"type":"m.login.password","user":"carol","password":"pw","initial_device_display_name":"` + strings.Repeat("é", 101) + `"}`, 400, "M_TOO_LARGE"},
		{"get_token off", "POST", "/_matrix/client/v1/login/get_token", ts.register("dan"), `{}`, 404, "M_UNRECOGNIZED"},
	})
	t.Run("flows", func(t *testing.T) {
		r := ts.do("GET", login, "", "")
		if string(r.body) != `{"flows":[{"type":"m.login.password"}]}` {
			t.Fatalf("%s", r.body)
		}
	})
	t.Run("same device id replaces token", func(t *testing.T) {
		body := `{"type":"m.login.password","user":"carol","password":"pw","device_id":"FIXED"}`
		a := ts.do("POST", login, "", body)
		b := ts.do("POST", login, "", body)
		if a.field("device_id") != "FIXED" || b.field("device_id") != "FIXED" {
			t.Fatalf("%s %s", a.body, b.body)
		}
		if r := ts.do("GET", "/_matrix/client/v3/account/whoami", a.field("access_token"), ""); r.errcode() != "M_UNKNOWN_TOKEN" {
			t.Fatalf("old token of the device still works: %s", r.body)
		}
	})
	t.Run("existing device keeps its name", func(t *testing.T) {
		a := ts.do("POST", login, "", `{"type":"m.login.password","user":"carol","password":"pw","device_id":"NAMED","initial_device_display_name":"First"}`)
		b := ts.do("POST", login, "", `{"type":"m.login.password","user":"carol","password":"pw","device_id":"NAMED","initial_device_display_name":"Second"}`)
		if d := ts.do("GET", "/_matrix/client/v3/devices/NAMED", b.field("access_token"), ""); a.status != 200 || d.field("display_name") != "First" {
			t.Fatalf("device: %s", d.body)
		}
	})
}

func TestLogoutAll(t *testing.T) {
	ts := newTestServer(t, Config{EnableRegistration: true})
	t1 := ts.register("erin")
	t2, _ := ts.login("erin", "pw")
	if r := ts.do("POST", "/_matrix/client/v3/logout/all", t1, ""); r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	for _, tok := range []string{t1, t2} {
		r := ts.do("GET", "/_matrix/client/v3/account/whoami", tok, "")
		if r.status != 401 || r.errcode() != "M_UNKNOWN_TOKEN" || r.obj(t)["soft_logout"] != false {
			t.Fatalf("after logout/all: %d %s", r.status, r.body)
		}
	}
	if r := ts.do("GET", "/_matrix/client/v3/devices", t2, ""); r.errcode() != "M_UNKNOWN_TOKEN" {
		t.Fatalf("devices: %s", r.body)
	}
	runErrCases(t, ts, []errCase{
		{"logout no token", "POST", "/_matrix/client/v3/logout", "", ``, 401, "M_MISSING_TOKEN"},
		{"logout/all no token", "POST", "/_matrix/client/v3/logout/all", "", ``, 401, "M_MISSING_TOKEN"},
		{"logout bad token", "POST", "/_matrix/client/v3/logout", "nope", ``, 401, "M_UNKNOWN_TOKEN"},
	})
}

func TestRefreshTokens(t *testing.T) {
	ts := newTestServer(t, Config{EnableRegistration: true})
	r := ts.do("POST", "/_matrix/client/v3/register", "", `{"username":"fay","password":"pw","refresh_token":true,"auth":{"type":"m.login.dummy"}}`)
	m := r.obj(t)
	at0, rt0 := r.field("access_token"), r.field("refresh_token")
	if rt0 == "" || m["expires_in_ms"] != float64(300000) {
		t.Fatalf("register with refresh: %s", r.body)
	}
	refresh := func(rt string) resp {
		return ts.do("POST", "/_matrix/client/v3/refresh", "", fmt.Sprintf(`{"refresh_token":%q}`, rt))
	}
	who := func(tok string) resp { return ts.do("GET", "/_matrix/client/v3/account/whoami", tok, "") }

	r1 := refresh(rt0)
	at1, rt1 := r1.field("access_token"), r1.field("refresh_token")
	if r1.status != 200 || at1 == "" || rt1 == "" || r1.obj(t)["expires_in_ms"] != float64(300000) {
		t.Fatalf("refresh: %d %s", r1.status, r1.body)
	}
	if who(at1).field("user_id") != "@fay:test.local" || who(at0).field("user_id") != "@fay:test.local" {
		t.Fatal("new or previous access token does not work")
	}
	// The client lost the answer: the old refresh token still works, once
	// more, and replaces what the lost answer carried.
	r2 := refresh(rt0)
	at2, rt2 := r2.field("access_token"), r2.field("refresh_token")
	if r2.status != 200 {
		t.Fatalf("repeated refresh: %d %s", r2.status, r2.body)
	}
	if who(at1).errcode() != "M_UNKNOWN_TOKEN" || refresh(rt1).errcode() != "M_UNKNOWN_TOKEN" {
		t.Fatal("tokens of the lost answer still work")
	}
	// Using the new refresh token retires the old one.
	r3 := refresh(rt2)
	if r3.status != 200 {
		t.Fatalf("refresh: %d %s", r3.status, r3.body)
	}
	if x := refresh(rt0); x.status != 401 || x.errcode() != "M_UNKNOWN_TOKEN" || x.obj(t)["soft_logout"] != false {
		t.Fatalf("old refresh token after the new one was used: %d %s", x.status, x.body)
	}
	if who(at2).field("user_id") == "" || who(r3.field("access_token")).field("user_id") == "" {
		t.Fatal("current tokens do not work")
	}
	// Logout revokes refresh tokens too.
	if x := ts.do("POST", "/_matrix/client/v3/logout", r3.field("access_token"), ""); x.status != 200 {
		t.Fatal(x.status)
	}
	if x := refresh(r3.field("refresh_token")); x.errcode() != "M_UNKNOWN_TOKEN" {
		t.Fatalf("refresh after logout: %s", x.body)
	}
	runErrCases(t, ts, []errCase{
		{"unknown", "POST", "/_matrix/client/v3/refresh", "", `{"refresh_token":"egr_nope"}`, 401, "M_UNKNOWN_TOKEN"},
		{"missing", "POST", "/_matrix/client/v3/refresh", "", `{}`, 400, "M_INVALID_PARAM"},
		{"wrong type", "POST", "/_matrix/client/v3/refresh", "", `{"refresh_token":5}`, 400, "M_BAD_JSON"},
		{"v1", "POST", "/_matrix/client/v1/refresh", "", `{"refresh_token":"egr_nope"}`, 401, "M_UNKNOWN_TOKEN"},
	})
	t.Run("login without refresh", func(t *testing.T) {
		r := ts.do("POST", "/_matrix/client/v3/login", "", `{"type":"m.login.password","user":"fay","password":"pw"}`)
		if m := r.obj(t); m["refresh_token"] != nil || m["expires_in_ms"] != nil {
			t.Fatalf("%s", r.body)
		}
	})
}

func TestRefreshDisabledAndExpiry(t *testing.T) {
	off := newTestServer(t, Config{EnableRegistration: true, Accounts: AccountConfig{AccessTokenLifetime: -1}})
	r := off.do("POST", "/_matrix/client/v3/register", "", `{"username":"gus","password":"pw","refresh_token":true,"auth":{"type":"m.login.dummy"}}`)
	if m := r.obj(t); m["refresh_token"] != nil || m["access_token"] == nil {
		t.Fatalf("refresh disabled: %s", r.body)
	}

	ts := newTestServer(t, Config{EnableRegistration: true, Accounts: AccountConfig{AccessTokenLifetime: time.Millisecond}})
	ts.register("hal")
	r = ts.do("POST", "/_matrix/client/v3/login", "", `{"type":"m.login.password","user":"hal","password":"pw","refresh_token":true}`)
	tok := r.field("access_token")
	time.Sleep(10 * time.Millisecond) // past the 1 ms lifetime
	w := ts.do("GET", "/_matrix/client/v3/account/whoami", tok, "")
	if w.status != 401 || w.errcode() != "M_UNKNOWN_TOKEN" || w.obj(t)["soft_logout"] != true {
		t.Fatalf("expired token: %d %s", w.status, w.body)
	}
	// The refresh token still works after the access token expired.
	x := ts.do("POST", "/_matrix/client/v3/refresh", "", fmt.Sprintf(`{"refresh_token":%q}`, r.field("refresh_token")))
	if x.status != 200 {
		t.Fatalf("refresh after expiry: %d %s", x.status, x.body)
	}
	// An expired token can still log out (Synapse: allow_expired).
	time.Sleep(10 * time.Millisecond)
	if o := ts.do("POST", "/_matrix/client/v3/logout", x.field("access_token"), ""); o.status != 200 {
		t.Fatalf("logout with an expired token: %d %s", o.status, o.body)
	}
	if y := ts.do("POST", "/_matrix/client/v3/refresh", "", fmt.Sprintf(`{"refresh_token":%q}`, x.field("refresh_token"))); y.errcode() != "M_UNKNOWN_TOKEN" {
		t.Fatalf("refresh after logout: %s", y.body)
	}
}

func TestDevices(t *testing.T) {
	ts := newTestServer(t, Config{EnableRegistration: true})
	tok := ts.register("ida")
	other, otherDev := ts.login("ida", "pw")
	ts.register("jon")
	devs := "/_matrix/client/v3/devices"
	var list struct {
		Devices []struct {
			DeviceID   string `json:"device_id"`
			LastSeenTS int64  `json:"last_seen_ts"`
		} `json:"devices"`
	}
	json.Unmarshal(ts.do("GET", devs, tok, "").body, &list)
	if len(list.Devices) != 2 || list.Devices[0].LastSeenTS == 0 {
		t.Fatalf("devices: %+v", list)
	}
	if r := ts.do("PUT", devs+"/"+otherDev, tok, `{"display_name":"Laptop"}`); r.status != 200 || string(r.body) != "{}" {
		t.Fatalf("put: %d %s", r.status, r.body)
	}
	if r := ts.do("GET", devs+"/"+otherDev, tok, ""); r.field("display_name") != "Laptop" || r.field("device_id") != otherDev {
		t.Fatalf("get: %s", r.body)
	}
	runErrCases(t, ts, []errCase{
		{"get unknown", "GET", devs + "/NOPE", tok, ``, 404, "M_NOT_FOUND"},
		{"put unknown", "PUT", devs + "/NOPE", tok, `{"display_name":"x"}`, 404, "M_NOT_FOUND"},
		{"put too long", "PUT", devs + "/" + otherDev, tok, `{"display_name":"` + strings.Repeat("x", 101) + `"}`, 400, "M_TOO_LARGE"},
		{"put bad json", "PUT", devs + "/" + otherDev, tok, `{"display_name":1}`, 400, "M_BAD_JSON"},
		{"list no token", "GET", devs, "", ``, 401, "M_MISSING_TOKEN"},
		{"list bad token", "GET", devs, "bad", ``, 401, "M_UNKNOWN_TOKEN"},
		{"delete_devices no list", "POST", "/_matrix/client/v3/delete_devices", tok, `{}`, 400, "M_MISSING_PARAM"},
		{"delete_devices bad list", "POST", "/_matrix/client/v3/delete_devices", tok, `{"devices":"A"}`, 400, "M_BAD_JSON"},
	})

	// DELETE /devices/{id}: the spec's 401, a wrong password (401 with
	// M_FORBIDDEN and the flows again), then the right one.
	path := devs + "/" + otherDev
	first := ts.do("DELETE", path, tok, "")
	m := first.obj(t)
	sess, _ := m["session"].(string)
	want := map[string]any{"flows": []any{map[string]any{"stages": []any{"m.login.password"}}}, "params": map[string]any{}, "session": sess}
	if first.status != 401 || !reflect.DeepEqual(m, want) {
		t.Fatalf("first: %d %s", first.status, first.body)
	}
	bad := ts.do("DELETE", path, tok, withAuth("", sess, "@ida:test.local", "wrong"))
	m = bad.obj(t)
	want["errcode"], want["error"], want["completed"] = "M_FORBIDDEN", "Invalid password", []any{}
	if bad.status != 401 || !reflect.DeepEqual(m, want) {
		t.Fatalf("wrong password: %d %s", bad.status, bad.body)
	}
	// The session is bound to its operation.
	if r := ts.do("POST", "/_matrix/client/v3/delete_devices", tok, withAuth(`{"devices":[]}`, sess, "ida", "pw")); r.status != 403 || r.errcode() != "M_FORBIDDEN" {
		t.Fatalf("other operation: %d %s", r.status, r.body)
	}
	// Another user's password does not authorise ida's request.
	if r := ts.do("DELETE", path, tok, withAuth("", sess, "jon", "pw")); r.status != 403 || r.errcode() != "M_FORBIDDEN" {
		t.Fatalf("other user: %d %s", r.status, r.body)
	}
	first = ts.do("DELETE", path, tok, "")
	ok := ts.do("DELETE", path, tok, withAuth("", first.field("session"), "ida", "pw"))
	if ok.status != 200 {
		t.Fatalf("delete: %d %s", ok.status, ok.body)
	}
	if r := ts.do("GET", "/_matrix/client/v3/account/whoami", other, ""); r.errcode() != "M_UNKNOWN_TOKEN" {
		t.Fatalf("deleted device's token: %s", r.body)
	}
	if r := ts.do("GET", path, tok, ""); r.status != 404 {
		t.Fatalf("deleted device: %s", r.body)
	}
	// A completed session is single use.
	if r := ts.do("DELETE", path, tok, withAuth("", first.field("session"), "ida", "pw")); r.status != 400 || r.errcode() != "M_UNKNOWN" {
		t.Fatalf("replayed session: %d %s", r.status, r.body)
	}

	// POST /delete_devices.
	t3, d3 := ts.login("ida", "pw")
	_, d4 := ts.login("ida", "pw")
	r := ts.uiaDo("POST", "/_matrix/client/v3/delete_devices", tok, fmt.Sprintf(`{"devices":[%q,%q,"GHOST"]}`, d3, d4), "ida", "pw")
	if r.status != 200 {
		t.Fatalf("delete_devices: %d %s", r.status, r.body)
	}
	if r := ts.do("GET", "/_matrix/client/v3/account/whoami", t3, ""); r.errcode() != "M_UNKNOWN_TOKEN" {
		t.Fatalf("deleted device's token: %s", r.body)
	}
	json.Unmarshal(ts.do("GET", devs, tok, "").body, &list)
	if len(list.Devices) != 1 {
		t.Fatalf("devices left: %+v", list)
	}
}

func TestChangePassword(t *testing.T) {
	ts := newTestServer(t, Config{EnableRegistration: true})
	tok := ts.register("kim")
	other, _ := ts.login("kim", "pw")
	pw := "/_matrix/client/v3/account/password"
	runErrCases(t, ts, []errCase{
		{"no token", "POST", pw, "", `{"new_password":"x"}`, 401, "M_MISSING_TOKEN"},
		{"bad json", "POST", pw, tok, `{"new_password":1}`, 400, "M_BAD_JSON"},
		{"too long", "POST", pw, tok, `{"new_password":"` + strings.Repeat("p", 513) + `"}`, 400, "M_INVALID_PARAM"},
	})
	if r := ts.uiaDo("POST", pw, tok, `{}`, "kim", "pw"); r.status != 400 || r.errcode() != "M_MISSING_PARAM" {
		t.Fatalf("no new password: %d %s", r.status, r.body)
	}
	if r := ts.uiaDo("POST", pw, tok, `{"new_password":"pw2"}`, "kim", "pw"); r.status != 200 {
		t.Fatalf("change: %d %s", r.status, r.body)
	}
	if r := ts.do("GET", "/_matrix/client/v3/account/whoami", tok, ""); r.status != 200 {
		t.Fatalf("requesting device logged out: %s", r.body)
	}
	if r := ts.do("GET", "/_matrix/client/v3/account/whoami", other, ""); r.errcode() != "M_UNKNOWN_TOKEN" {
		t.Fatalf("other device survived: %s", r.body)
	}
	if r := ts.do("POST", "/_matrix/client/v3/login", "", `{"type":"m.login.password","user":"kim","password":"pw"}`); r.errcode() != "M_FORBIDDEN" {
		t.Fatalf("old password: %s", r.body)
	}
	keep, _ := ts.login("kim", "pw2")
	if r := ts.uiaDo("POST", pw, tok, `{"new_password":"pw3","logout_devices":false}`, "kim", "pw2"); r.status != 200 {
		t.Fatalf("change: %d %s", r.status, r.body)
	}
	if r := ts.do("GET", "/_matrix/client/v3/account/whoami", keep, ""); r.status != 200 {
		t.Fatalf("logout_devices false logged out: %s", r.body)
	}
}

func TestDeactivate(t *testing.T) {
	ts := newTestServer(t, Config{EnableRegistration: true})
	owner := ts.register("lee")
	tok := ts.register("max")
	room := ts.do("POST", "/_matrix/client/v3/createRoom", owner, `{"preset":"public_chat"}`).field("room_id")
	if r := ts.do("POST", "/_matrix/client/v3/join/"+room, tok, `{}`); r.status != 200 {
		t.Fatalf("join: %s", r.body)
	}
	deact := "/_matrix/client/v3/account/deactivate"
	runErrCases(t, ts, []errCase{
		{"no token", "POST", deact, "", `{}`, 401, "M_MISSING_TOKEN"},
		{"erase not bool", "POST", deact, tok, `{"erase":"yes"}`, 400, "M_BAD_JSON"},
	})
	r := ts.uiaDo("POST", deact, tok, `{}`, "@max:test.local", "pw")
	if r.status != 200 || r.field("id_server_unbind_result") != "no-support" {
		t.Fatalf("deactivate: %d %s", r.status, r.body)
	}
	st := ts.do("GET", "/_matrix/client/v3/rooms/"+room+"/state/m.room.member/@max:test.local", owner, "")
	if st.field("membership") != "leave" {
		t.Fatalf("membership after deactivation: %s", st.body)
	}
	runErrCases(t, ts, []errCase{
		{"login", "POST", "/_matrix/client/v3/login", "", `{"type":"m.login.password","user":"max","password":"pw"}`, 403, "M_USER_DEACTIVATED"},
		{"token", "GET", "/_matrix/client/v3/account/whoami", tok, ``, 401, "M_UNKNOWN_TOKEN"},
		{"register again", "POST", "/_matrix/client/v3/register", "", `{"username":"max","password":"pw"}`, 400, "M_USER_IN_USE"},
	})
}

func TestLoginToken(t *testing.T) {
	ts := newTestServer(t, Config{EnableRegistration: true, Accounts: AccountConfig{LoginToken: true}})
	tok := ts.register("ned")
	if r := ts.do("GET", "/_matrix/client/v3/login", "", ""); !strings.Contains(string(r.body), `{"get_login_token":true,"type":"m.login.token"}`) {
		t.Fatalf("flows: %s", r.body)
	}
	caps := ts.do("GET", "/_matrix/client/v3/capabilities", tok, "")
	if !strings.Contains(string(caps.body), `"m.get_login_token":{"enabled":true}`) || !strings.Contains(string(caps.body), `"m.change_password":{"enabled":true}`) {
		t.Fatalf("capabilities: %s", caps.body)
	}
	r := ts.uiaDo("POST", "/_matrix/client/v1/login/get_token", tok, `{}`, "ned", "pw")
	lt := r.field("login_token")
	if r.status != 200 || lt == "" || r.obj(t)["expires_in_ms"] != float64(120000) {
		t.Fatalf("get_token: %d %s", r.status, r.body)
	}
	body := fmt.Sprintf(`{"type":"m.login.token","token":%q}`, lt)
	if l := ts.do("POST", "/_matrix/client/v3/login", "", body); l.status != 200 || l.field("user_id") != "@ned:test.local" {
		t.Fatalf("token login: %d %s", l.status, l.body)
	}
	runErrCases(t, ts, []errCase{
		{"reused", "POST", "/_matrix/client/v3/login", "", body, 403, "M_FORBIDDEN"},
		{"unknown", "POST", "/_matrix/client/v3/login", "", `{"type":"m.login.token","token":"nope"}`, 403, "M_FORBIDDEN"},
		{"get_token no token", "POST", "/_matrix/client/v1/login/get_token", "", `{}`, 401, "M_MISSING_TOKEN"},
	})
}

func TestWellKnown(t *testing.T) {
	ts := newTestServer(t, Config{Accounts: AccountConfig{PublicBaseURL: "https://matrix.example.org/", WellKnownServer: "matrix.example.org:443"}})
	r := ts.do("GET", "/.well-known/matrix/client", "", "")
	if r.status != 200 || string(r.body) != `{"m.homeserver":{"base_url":"https://matrix.example.org/"}}` {
		t.Fatalf("client: %d %s", r.status, r.body)
	}
	r = ts.do("GET", "/.well-known/matrix/server", "", "")
	if r.status != 200 || string(r.body) != `{"m.server":"matrix.example.org:443"}` {
		t.Fatalf("server: %d %s", r.status, r.body)
	}
	bare := newTestServer(t, Config{})
	runErrCases(t, bare, []errCase{
		{"client", "GET", "/.well-known/matrix/client", "", ``, 404, "M_NOT_FOUND"},
		{"server", "GET", "/.well-known/matrix/server", "", ``, 404, "M_NOT_FOUND"},
	})
}

func TestCapabilitiesDefaults(t *testing.T) {
	ts := newTestServer(t, Config{EnableRegistration: true})
	tok := ts.register("ola")
	var c struct {
		Capabilities map[string]map[string]any `json:"capabilities"`
	}
	json.Unmarshal(ts.do("GET", "/_matrix/client/v3/capabilities", tok, "").body, &c)
	for k, want := range map[string]bool{"m.change_password": true, "m.set_displayname": true, "m.set_avatar_url": true,
		"m.profile_fields": true, "m.3pid_changes": false, "m.get_login_token": false} {
		if c.Capabilities[k]["enabled"] != want {
			t.Errorf("%s: %v, want %v", k, c.Capabilities[k], want)
		}
	}
}

// BenchmarkAuthenticate measures what every authenticated request pays for
// its token: one lookup, two for an expiring token.
func BenchmarkAuthenticate(b *testing.B) {
	ts := newTestServer(b, Config{EnableRegistration: true})
	plain := ts.register("bench")
	r := ts.do("POST", "/_matrix/client/v3/login", "", `{"type":"m.login.password","user":"bench","password":"pw","refresh_token":true}`)
	expiring := r.field("access_token")
	for _, c := range []struct{ name, tok string }{{"plain", plain}, {"expiring", expiring}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if _, _, e := ts.srv.tokenOwner([]byte(c.tok)); e != nil {
					b.Fatal(e)
				}
			}
		})
	}
}

func BenchmarkLimiter(b *testing.B) {
	l := newLimiter(Limit{PerSecond: 1e9, Burst: 1 << 30})
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		l.allow("203.0.113.7", true)
	}
}
