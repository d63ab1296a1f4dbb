package main

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"engram/api"
	"engram/dag"
	"engram/dag/rooms"
)

// inProcessServer runs engram's API in this process with a shared secret
// and open registration off, as an operator's server would be.
func inProcessServer(t *testing.T, secret string) (url, listen string) {
	t.Helper()
	cfg := Config{ServerName: "reg.test", DataDir: t.TempDir(), RegistrationSharedSecret: secret, PasswordCost: 4}
	cfg.fillDefaults()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	n, err := openNode(cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	key, err := dag.GenerateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	seq := rooms.New(rooms.Config{ServerName: cfg.ServerName, KeyID: key.ID, Key: key.Key}, n.log, n.store)
	srv := api.New(api.Config{ServerName: cfg.ServerName, RegistrationSharedSecret: secret, PasswordCost: 4,
		Accounts: accountsConfig(cfg)}, n.log, n.store, seq, logger)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() {
		srv.Shutdown()
		n.close()
	})
	return "http://" + ln.Addr().String(), ln.Addr().String()
}

// loginStatus logs in and then asks an admin-only endpoint: 200 for an
// admin, 403 for a user.
func loginAndAdmin(t *testing.T, url, user, password string) (loggedIn bool, adminStatus int) {
	t.Helper()
	var out struct {
		AccessToken string `json:"access_token"`
	}
	code, err := call("POST", url+"/_matrix/client/v3/login", "", map[string]any{
		"type": "m.login.password", "identifier": map[string]string{"type": "m.id.user", "user": user}, "password": password}, &out)
	if err != nil || code != 200 {
		return false, 0
	}
	code, _ = call("GET", url+"/_synapse/admin/v1/registration_tokens", out.AccessToken, nil, nil)
	return true, code
}

func TestRegisterUser(t *testing.T) {
	const secret = "the-shared-secret"
	url, listen := inProcessServer(t, secret)
	conf := filepath.Join(t.TempDir(), "engram.yaml")
	os.WriteFile(conf, []byte(fmt.Sprintf("server_name: reg.test\nclient_listen: %q\nregistration_shared_secret: %q\nsome_synapse_key: 1\n", listen, secret)), 0o600)

	cases := []struct {
		name      string
		args      []string
		code      int
		out       string // expected in stdout (code 0) or stderr
		user, pw  string // then logs in as user
		wantAdmin bool
	}{
		{"admin with -k", []string{"-u", "alice", "-p", "pw1", "-a", "-k", secret, url}, 0, "Success!", "alice", "pw1", true},
		{"flags after the URL", []string{url, "-u", "bob", "--password", "pw2", "--no-admin", "--shared-secret", secret}, 0, "Success!", "bob", "pw2", false},
		{"config file and its client_listen", []string{"-c", conf, "-u", "carol", "-p", "pw3"}, 0, "Success!", "carol", "pw3", false},
		{"user type", []string{"-u", "botty", "-p", "pw4", "-t", "bot", "-k", secret, url}, 0, "Success!", "botty", "pw4", false},
		{"exists ok", []string{"-u", "alice", "-p", "x", "--exists-ok", "-k", secret, url}, 0, "already exists", "", "", false},
		{"exists", []string{"-u", "alice", "-p", "x", "-k", secret, url}, 1, "M_USER_IN_USE", "", "", false},
		{"wrong secret", []string{"-u", "dave", "-p", "x", "-k", "wrong", url}, 1, "HMAC incorrect", "", "", false},
		{"no password, no terminal", []string{"-u", "erin", "-k", secret, url}, 1, "not a terminal", "", "", false},
		{"no user, no terminal", []string{"-p", "x", "-k", secret, url}, 1, "not a terminal", "", "", false},
		{"no secret", []string{"-u", "x", "-p", "x", url}, 1, "exactly one of -c", "", "", false},
		{"both secrets", []string{"-u", "x", "-p", "x", "-k", secret, "-c", conf, url}, 1, "exactly one of -c", "", "", false},
		{"admin and no-admin", []string{"-u", "x", "-p", "x", "-a", "--no-admin", "-k", secret, url}, 1, "mutually exclusive", "", "", false},
		{"bad user type", []string{"-u", "x", "-p", "x", "-t", "robot", "-k", secret, url}, 1, "invalid user type", "", "", false},
		{"config without secret", []string{"-c", os.DevNull, "-u", "x", "-p", "x"}, 1, "registration_shared_secret", "", "", false},
		{"unreachable", []string{"-u", "x", "-p", "x", "-k", secret, "http://127.0.0.1:1"}, 1, "register-user", "", "", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(append([]string{"register-user"}, c.args...), strings.NewReader(""), &stdout, &stderr)
			if code != c.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, c.code, stdout.String(), stderr.String())
			}
			got := stdout.String()
			if c.code != 0 {
				got = stderr.String()
			}
			if !strings.Contains(got, c.out) {
				t.Fatalf("output %q lacks %q", got, c.out)
			}
			if c.user == "" {
				return
			}
			ok, adminStatus := loginAndAdmin(t, url, c.user, c.pw)
			if !ok {
				t.Fatalf("%s cannot log in", c.user)
			}
			if (adminStatus == 200) != c.wantAdmin {
				t.Fatalf("admin endpoint answered %d for %s", adminStatus, c.user)
			}
		})
	}
}

func TestAccountsConfig(t *testing.T) {
	c := Config{ServerName: "x", RefreshableAccessTokenLifetime: "10m", RCLoopback: true,
		RCLogin: &RCLogin{Address: &RateLimitConfig{PerSecond: 1, BurstCount: 9}}, LoginViaExistingSession: &LoginViaExistingSession{Enabled: true}}
	c.fillDefaults()
	if err := c.validate(); err != nil {
		t.Fatal(err)
	}
	a := accountsConfig(c)
	if a.AccessTokenLifetime.Minutes() != 10 || !a.LoginToken || a.RateLimits == nil || !a.RateLimits.Loopback ||
		a.RateLimits.LoginAddress != (api.Limit{PerSecond: 1, Burst: 9}) || a.RateLimits.Registration != api.DefaultRateLimits().Registration {
		t.Fatalf("%+v %+v", a, a.RateLimits)
	}
	for v, want := range map[string]int64{"": 0, "off": -1, "90s": 90e9} {
		c.RefreshableAccessTokenLifetime = v
		if d, err := c.accessTokenLifetime(); err != nil || int64(d) != want {
			t.Errorf("%q: %v %v", v, d, err)
		}
	}
	c.RefreshableAccessTokenLifetime = "soon"
	if c.validate() == nil {
		t.Error("bad lifetime accepted")
	}
}
