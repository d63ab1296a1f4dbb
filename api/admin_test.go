package api

import (
	"encoding/json"
	"fmt"
	"testing"
)

// The MAC must be exactly Synapse's: vectors computed with Python's hmac.
func TestSharedSecretMAC(t *testing.T) {
	cases := []struct {
		nonce, user, pw, userType string
		admin                     bool
		want                      string
	}{
		{"abc", "alice", "pw", "", true, "fff9f57189c2d1a494c19759e16d592b0f64ce32"},
		{"abc", "bob", "pw2", "bot", false, "72e6cf0333ee0f6b13ed9b230c6273c6890dd151"},
	}
	for _, c := range cases {
		if got := SharedSecretMAC("s3cret", c.nonce, c.user, c.pw, c.admin, c.userType); got != c.want {
			t.Errorf("%s: got %s want %s", c.user, got, c.want)
		}
	}
}

func (ts *testServer) nonce() string {
	ts.t.Helper()
	r := ts.do("GET", "/_synapse/admin/v1/register", "", "")
	if r.status != 200 || len(r.field("nonce")) != 128 {
		ts.t.Fatalf("nonce: %d %s", r.status, r.body)
	}
	return r.field("nonce")
}

func sharedSecretBody(secret, nonce, user, pw string, admin bool, extra string) string {
	mac := SharedSecretMAC(secret, nonce, user, pw, admin, "")
	return fmt.Sprintf(`{"nonce":%q,"username":%q,"password":%q,"admin":%v,"mac":%q%s}`, nonce, user, pw, admin, mac, extra)
}

func TestSharedSecretRegistration(t *testing.T) {
	const secret = "s3cret"
	// Open registration is off: shared-secret registration still works.
	ts := newTestServer(t, Config{RegistrationSharedSecret: secret})
	path := "/_synapse/admin/v1/register"

	n := ts.nonce()
	r := ts.do("POST", path, "", sharedSecretBody(secret, n, "Root", "pw", true, `,"displayname":"The Root"`))
	if r.status != 200 || r.field("user_id") != "@root:test.local" || r.field("access_token") == "" || r.field("device_id") == "" {
		t.Fatalf("register: %d %s", r.status, r.body)
	}
	admin := r.field("access_token")
	if p := ts.do("GET", "/_matrix/client/v3/profile/@root:test.local/displayname", "", ""); p.field("displayname") != "The Root" {
		t.Fatalf("displayname: %s", p.body)
	}
	if l := ts.do("GET", "/_synapse/admin/v1/registration_tokens", admin, ""); l.status != 200 {
		t.Fatalf("not an admin: %d %s", l.status, l.body)
	}
	// The nonce is single use.
	if r := ts.do("POST", path, "", sharedSecretBody(secret, n, "other", "pw", false, "")); r.status != 400 || r.field("error") != "unrecognised nonce" {
		t.Fatalf("reused nonce: %d %s", r.status, r.body)
	}
	// A non-admin with user_type and inhibit_login.
	n = ts.nonce()
	body := fmt.Sprintf(`{"nonce":%q,"username":"botty","password":"pw","user_type":"bot","inhibit_login":true,"mac":%q}`,
		n, SharedSecretMAC(secret, n, "botty", "pw", false, "bot"))
	if r := ts.do("POST", path, "", body); r.status != 200 || r.obj(t)["access_token"] != nil {
		t.Fatalf("bot: %d %s", r.status, r.body)
	}
	tok, _ := ts.login("botty", "pw")
	if l := ts.do("GET", "/_synapse/admin/v1/registration_tokens", tok, ""); l.status != 403 || l.errcode() != "M_FORBIDDEN" {
		t.Fatalf("non-admin: %d %s", l.status, l.body)
	}

	fresh := func(user, pw string, admin bool) string {
		return sharedSecretBody(secret, ts.nonce(), user, pw, admin, "")
	}
	wrongMAC := func() string {
		n := ts.nonce()
		return fmt.Sprintf(`{"nonce":%q,"username":"eve","password":"pw","admin":true,"mac":%q}`, n, SharedSecretMAC(secret, n, "eve", "pw", false, ""))
	}
	runErrCases(t, ts, []errCase{
		{"wrong mac", "POST", path, "", wrongMAC(), 403, "M_FORBIDDEN"},
		{"wrong secret", "POST", path, "", sharedSecretBody("nope", ts.nonce(), "eve", "pw", false, ""), 403, "M_FORBIDDEN"},
		{"no nonce", "POST", path, "", `{"username":"eve","password":"pw","mac":"00"}`, 400, "M_BAD_JSON"},
		{"unknown nonce", "POST", path, "", `{"nonce":"abc","username":"eve","password":"pw","mac":"00"}`, 400, "M_UNKNOWN"},
		{"no username", "POST", path, "", fmt.Sprintf(`{"nonce":%q,"password":"pw","mac":"00"}`, ts.nonce()), 400, "M_BAD_JSON"},
		{"no password", "POST", path, "", fmt.Sprintf(`{"nonce":%q,"username":"eve","mac":"00"}`, ts.nonce()), 400, "M_BAD_JSON"},
		{"no mac", "POST", path, "", fmt.Sprintf(`{"nonce":%q,"username":"eve","password":"pw"}`, ts.nonce()), 400, "M_BAD_JSON"},
		{"bad user type", "POST", path, "", fmt.Sprintf(`{"nonce":%q,"username":"eve","password":"pw","user_type":"robot","mac":"00"}`, ts.nonce()), 400, "M_UNKNOWN"},
		{"user in use", "POST", path, "", fresh("root", "pw", false), 400, "M_USER_IN_USE"},
		{"invalid username", "POST", path, "", fresh("e ve", "pw", false), 400, "M_INVALID_USERNAME"},
		{"not json", "POST", path, "", `{`, 400, "M_NOT_JSON"},
	})

	off := newTestServer(t, Config{})
	r = off.do("POST", path, "", sharedSecretBody(secret, off.nonce(), "x", "pw", false, ""))
	if r.status != 400 || r.field("error") != "Shared secret registration is not enabled" {
		t.Fatalf("disabled: %d %s", r.status, r.body)
	}
}

func TestRegistrationTokens(t *testing.T) {
	const secret = "s3cret"
	ts := newTestServer(t, Config{EnableRegistration: true, RegistrationSharedSecret: secret,
		Accounts: AccountConfig{RegistrationRequiresToken: true, RegistrationTokens: []string{"static"}}})
	r := ts.do("POST", "/_synapse/admin/v1/register", "", sharedSecretBody(secret, ts.nonce(), "admin", "pw", true, ""))
	admin := r.field("access_token")
	user := ts.do("POST", "/_synapse/admin/v1/register", "", sharedSecretBody(secret, ts.nonce(), "plain", "pw", false, "")).field("access_token")
	reg := "/_matrix/client/v3/register"

	// The flows: the token stage before dummy, as in Synapse.
	first := ts.do("POST", reg, "", `{"username":"ron","password":"pw"}`)
	var body struct {
		Flows []struct {
			Stages []string `json:"stages"`
		} `json:"flows"`
		Session   string   `json:"session"`
		Completed []string `json:"completed"`
		Errcode   string   `json:"errcode"`
	}
	json.Unmarshal(first.body, &body)
	if first.status != 401 || len(body.Flows) != 1 || fmt.Sprint(body.Flows[0].Stages) != "[m.login.registration_token m.login.dummy]" {
		t.Fatalf("flows: %s", first.body)
	}
	sess := body.Session
	step := func(auth string) resp {
		return ts.do("POST", reg, "", fmt.Sprintf(`{"username":"ron","password":"pw","auth":{"session":%q,%s}}`, sess, auth))
	}
	// Dummy alone does not complete the flow.
	r = step(`"type":"m.login.dummy"`)
	body.Completed, body.Errcode = nil, ""
	json.Unmarshal(r.body, &body)
	if r.status != 401 || fmt.Sprint(body.Completed) != "[m.login.dummy]" {
		t.Fatalf("dummy only: %d %s", r.status, r.body)
	}
	r = step(`"type":"m.login.registration_token","token":"wrong"`)
	body.Completed, body.Errcode = nil, ""
	json.Unmarshal(r.body, &body)
	if r.status != 401 || body.Errcode != "M_UNAUTHORIZED" || len(body.Flows) != 1 {
		t.Fatalf("wrong token: %d %s", r.status, r.body)
	}
	if r = step(`"type":"m.login.registration_token","token":"static"`); r.status != 200 || r.field("user_id") != "@ron:test.local" {
		t.Fatalf("static token: %d %s", r.status, r.body)
	}

	// Admin-made token with one use.
	nt := ts.do("POST", "/_synapse/admin/v1/registration_tokens/new", admin, `{"token":"once","uses_allowed":1}`)
	if nt.status != 200 || string(nt.body) != `{"completed":0,"expiry_time":null,"pending":0,"token":"once","uses_allowed":1}` {
		t.Fatalf("new token: %d %s", nt.status, nt.body)
	}
	valid := func(tok string) string {
		return string(ts.do("GET", "/_matrix/client/v1/register/m.login.registration_token/validity?token="+tok, "", "").body)
	}
	if valid("once") != `{"valid":true}` || valid("static") != `{"valid":true}` || valid("nope") != `{"valid":false}` {
		t.Fatal("validity")
	}
	oneShot := func(name, tok string) resp {
		f := ts.do("POST", reg, "", fmt.Sprintf(`{"username":%q,"password":"pw"}`, name))
		s := f.field("session")
		ts.do("POST", reg, "", fmt.Sprintf(`{"username":%q,"password":"pw","auth":{"session":%q,"type":"m.login.registration_token","token":%q}}`, name, s, tok))
		return ts.do("POST", reg, "", fmt.Sprintf(`{"username":%q,"password":"pw","auth":{"session":%q,"type":"m.login.dummy"}}`, name, s))
	}
	if r := oneShot("sam", "once"); r.status != 200 {
		t.Fatalf("admin token: %d %s", r.status, r.body)
	}
	if r := oneShot("tom", "once"); r.status != 401 {
		t.Fatalf("spent token accepted: %d %s", r.status, r.body)
	}
	if valid("once") != `{"valid":false}` {
		t.Fatal("spent token still valid")
	}
	g := ts.do("GET", "/_synapse/admin/v1/registration_tokens/once", admin, "")
	if g.obj(t)["completed"] != float64(1) {
		t.Fatalf("get: %s", g.body)
	}
	if u := ts.do("PUT", "/_synapse/admin/v1/registration_tokens/once", admin, `{"uses_allowed":null}`); u.obj(t)["uses_allowed"] != nil || u.status != 200 {
		t.Fatalf("update: %d %s", u.status, u.body)
	}
	if valid("once") != `{"valid":true}` {
		t.Fatal("unlimited token not valid")
	}
	gen := ts.do("POST", "/_synapse/admin/v1/registration_tokens/new", admin, `{"length":20}`)
	if len(gen.field("token")) != 20 {
		t.Fatalf("generated: %s", gen.body)
	}
	var list struct {
		Tokens []map[string]any `json:"registration_tokens"`
	}
	json.Unmarshal(ts.do("GET", "/_synapse/admin/v1/registration_tokens?valid=true", admin, "").body, &list)
	if len(list.Tokens) != 2 {
		t.Fatalf("list: %+v", list)
	}
	if d := ts.do("DELETE", "/_synapse/admin/v1/registration_tokens/once", admin, ""); d.status != 200 {
		t.Fatalf("delete: %d %s", d.status, d.body)
	}
	base := "/_synapse/admin/v1/registration_tokens"
	runErrCases(t, ts, []errCase{
		{"deleted", "GET", base + "/once", admin, ``, 404, "M_NOT_FOUND"},
		{"delete unknown", "DELETE", base + "/once", admin, ``, 404, "M_NOT_FOUND"},
		{"update unknown", "PUT", base + "/once", admin, `{}`, 404, "M_NOT_FOUND"},
		{"duplicate", "POST", base + "/new", admin, fmt.Sprintf(`{"token":%q}`, gen.field("token")), 400, "M_INVALID_PARAM"},
		{"bad token", "POST", base + "/new", admin, `{"token":"a b"}`, 400, "M_INVALID_PARAM"},
		{"negative uses", "POST", base + "/new", admin, `{"uses_allowed":-1}`, 400, "M_INVALID_PARAM"},
		{"past expiry", "POST", base + "/new", admin, `{"expiry_time":1}`, 400, "M_INVALID_PARAM"},
		{"bad length", "POST", base + "/new", admin, `{"length":65}`, 400, "M_INVALID_PARAM"},
		{"bad valid", "GET", base + "?valid=maybe", admin, ``, 400, "M_INVALID_PARAM"},
		{"non-admin", "POST", base + "/new", user, `{}`, 403, "M_FORBIDDEN"},
		{"no token", "GET", base, "", ``, 401, "M_MISSING_TOKEN"},
		{"validity missing", "GET", "/_matrix/client/v1/register/m.login.registration_token/validity", "", ``, 400, "M_MISSING_PARAM"},
	})
	closed := newTestServer(t, Config{})
	if r := closed.do("GET", "/_matrix/client/v1/register/m.login.registration_token/validity?token=x", "", ""); r.status != 403 || r.errcode() != "M_FORBIDDEN" {
		t.Fatalf("validity with registration off: %d %s", r.status, r.body)
	}
}

func TestAdminDeactivate(t *testing.T) {
	const secret = "s3cret"
	ts := newTestServer(t, Config{EnableRegistration: true, RegistrationSharedSecret: secret})
	admin := ts.do("POST", "/_synapse/admin/v1/register", "", sharedSecretBody(secret, ts.nonce(), "boss", "pw", true, "")).field("access_token")
	victim := ts.register("vic")
	plain := ts.register("pat")
	path := "/_synapse/admin/v1/deactivate/"
	runErrCases(t, ts, []errCase{
		{"non-admin", "POST", path + "@vic:test.local", plain, `{}`, 403, "M_FORBIDDEN"},
		{"unknown", "POST", path + "@nobody:test.local", admin, `{}`, 404, "M_NOT_FOUND"},
		{"remote", "POST", path + "@vic:elsewhere", admin, `{}`, 400, "M_UNKNOWN"},
		{"erase not bool", "POST", path + "@vic:test.local", admin, `{"erase":1}`, 400, "M_BAD_JSON"},
	})
	if r := ts.do("POST", path+"@vic:test.local", admin, `{"erase":true}`); r.status != 200 || r.field("id_server_unbind_result") != "no-support" {
		t.Fatalf("deactivate: %d %s", r.status, r.body)
	}
	if r := ts.do("GET", "/_matrix/client/v3/account/whoami", victim, ""); r.errcode() != "M_UNKNOWN_TOKEN" {
		t.Fatalf("token survived: %s", r.body)
	}
	if r := ts.do("GET", "/_matrix/client/v3/profile/@vic:test.local", "", ""); r.status != 404 {
		t.Fatalf("erased profile: %d %s", r.status, r.body)
	}
}
