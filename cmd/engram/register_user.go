package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"engram/api"
)

// registerUser is `engram register-user`: Synapse's register_new_matrix_user
// with the same flags. It registers through the shared-secret admin API
// (GET a nonce, POST the HMAC), so it works against any homeserver that
// offers /_synapse/admin/v1/register, not only engram.
//
//	engram register-user [-u USER] [-p PASSWORD | --password-file FILE]
//	    [-t USER_TYPE] [-a | --no-admin] [--exists-ok]
//	    (-c CONFIG | -k SHARED_SECRET) [SERVER_URL]
//
// Missing user and password are prompted for only when standard input is a
// terminal; otherwise they are an error.
func registerUser(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("register-user", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var user, password, passwordFile, userType, configPath, secret string
	var admin, noAdmin, existsOK bool
	for _, n := range []string{"u", "user"} {
		fs.StringVar(&user, n, "", "local part of the new user (prompted if omitted)")
	}
	for _, n := range []string{"p", "password"} {
		fs.StringVar(&password, n, "", "new password for the user (prompted if omitted)")
	}
	fs.StringVar(&passwordFile, "password-file", "", "file holding the new password")
	for _, n := range []string{"t", "user-type"} {
		fs.StringVar(&userType, n, "", "user type: support or bot (optional)")
	}
	for _, n := range []string{"a", "admin"} {
		fs.BoolVar(&admin, n, false, "make the new user a server admin")
	}
	fs.BoolVar(&noAdmin, "no-admin", false, "do not make the new user a server admin")
	fs.BoolVar(&existsOK, "exists-ok", false, "do not fail if the user already exists")
	for _, n := range []string{"c", "config"} {
		fs.StringVar(&configPath, n, "", "config file holding registration_shared_secret")
	}
	for _, n := range []string{"k", "shared-secret"} {
		fs.StringVar(&secret, n, "", "the registration shared secret")
	}
	// Flags may follow the server URL, as with Python's argparse.
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(positional) > 1 {
		return fmt.Errorf("too many arguments: %q", positional)
	}
	if admin && noAdmin {
		return fmt.Errorf("-a/--admin and --no-admin are mutually exclusive")
	}
	if (configPath == "") == (secret == "") {
		return fmt.Errorf("exactly one of -c CONFIG or -k SHARED_SECRET is required")
	}
	if password != "" && passwordFile != "" {
		return fmt.Errorf("-p/--password and --password-file are mutually exclusive")
	}
	if userType != "" && userType != "support" && userType != "bot" {
		return fmt.Errorf("invalid user type %q (support or bot)", userType)
	}

	serverURL := ""
	if len(positional) == 1 {
		serverURL = positional[0]
	}
	if configPath != "" {
		s, listen, err := readSharedSecret(configPath)
		if err != nil {
			return err
		}
		secret = s
		if serverURL == "" && listen != "" {
			serverURL = listenURL(listen)
		}
	}
	if serverURL == "" {
		serverURL = "http://localhost:8008"
	}
	if passwordFile != "" {
		b, err := os.ReadFile(passwordFile)
		if err != nil {
			return err
		}
		password = strings.TrimRight(string(b), "\r\n")
	}

	tty := isTerminal(stdin)
	in := bufio.NewReader(stdin)
	if user == "" {
		if !tty {
			return fmt.Errorf("no user given (-u) and standard input is not a terminal")
		}
		def := os.Getenv("USER")
		prompt := "New user localpart: "
		if def != "" {
			prompt = fmt.Sprintf("New user localpart [%s]: ", def)
		}
		fmt.Fprint(stdout, prompt)
		line, _ := readLine(in)
		if user = line; user == "" {
			user = def
		}
		if user == "" {
			return fmt.Errorf("no user given")
		}
	}
	if password == "" {
		if !tty {
			return fmt.Errorf("no password given (-p or --password-file) and standard input is not a terminal")
		}
		p1, err := readSecret(in, stdout, "Password: ")
		if err != nil {
			return err
		}
		if p1 == "" {
			return fmt.Errorf("password cannot be blank")
		}
		p2, err := readSecret(in, stdout, "Confirm password: ")
		if err != nil {
			return err
		}
		if p1 != p2 {
			return fmt.Errorf("passwords do not match")
		}
		password = p1
	}
	if !admin && !noAdmin && tty {
		fmt.Fprint(stdout, "Make admin [no]: ")
		line, _ := readLine(in)
		admin = strings.HasPrefix(strings.ToLower(line), "y")
	}
	return requestRegistration(stdout, serverURL, secret, user, password, admin, userType, existsOK)
}

// requestRegistration performs the two requests of shared-secret registration.
func requestRegistration(stdout io.Writer, serverURL, secret, user, password string, admin bool, userType string, existsOK bool) error {
	client := &http.Client{Timeout: 30 * time.Second}
	endpoint := strings.TrimRight(serverURL, "/") + "/_synapse/admin/v1/register"
	res, err := client.Get(endpoint)
	if err != nil {
		return err
	}
	var nonce struct {
		Nonce string `json:"nonce"`
	}
	body, err := readReply(res, &nonce)
	if err != nil {
		return err
	}
	if nonce.Nonce == "" {
		return fmt.Errorf("no nonce in the server's answer: %s", body)
	}
	req := map[string]any{
		"nonce":    nonce.Nonce,
		"username": user,
		"password": password,
		"mac":      api.SharedSecretMAC(secret, nonce.Nonce, user, password, admin, userType),
		"admin":    admin,
	}
	if userType != "" {
		req["user_type"] = userType
	}
	b, _ := json.Marshal(req)
	fmt.Fprintln(stdout, "Sending registration request...")
	res, err = client.Post(endpoint, "application/json", bytes.NewReader(b))
	if err != nil {
		return err
	}
	var ok struct {
		UserID string `json:"user_id"`
	}
	if _, err := readReply(res, &ok); err != nil {
		var re *replyError
		if existsOK && errors.As(err, &re) && re.Errcode == "M_USER_IN_USE" {
			fmt.Fprintln(stdout, "User already exists. Skipping.")
			return nil
		}
		return err
	}
	fmt.Fprintf(stdout, "Success! Registered %s\n", ok.UserID)
	return nil
}

// replyError is a Matrix error answer.
type replyError struct {
	Status  int
	Errcode string `json:"errcode"`
	Message string `json:"error"`
}

func (e *replyError) Error() string {
	return fmt.Sprintf("server answered %d %s: %s", e.Status, e.Errcode, e.Message)
}

// readReply decodes a 200 answer into v, or returns the error it carries.
func readReply(res *http.Response, v any) ([]byte, error) {
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if res.StatusCode != http.StatusOK {
		e := &replyError{Status: res.StatusCode}
		if json.Unmarshal(body, e) != nil || e.Errcode == "" {
			return body, fmt.Errorf("server answered %s: %s", res.Status, bytes.TrimSpace(body))
		}
		return body, e
	}
	if err := json.Unmarshal(body, v); err != nil {
		return body, fmt.Errorf("bad answer from server: %w", err)
	}
	return body, nil
}

// readSharedSecret reads registration_shared_secret (or the file named by
// registration_shared_secret_path, as Synapse allows) and client_listen
// from a config file. Unknown keys are fine: it may be a Synapse config.
func readSharedSecret(path string) (secret, listen string, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", "", err
	}
	var c struct {
		Secret     string `yaml:"registration_shared_secret"`
		SecretPath string `yaml:"registration_shared_secret_path"`
		Listen     string `yaml:"client_listen"`
	}
	if err := yaml.Unmarshal(b, &c); err != nil {
		return "", "", fmt.Errorf("%s: %w", path, err)
	}
	if c.Secret == "" && c.SecretPath != "" {
		s, err := os.ReadFile(c.SecretPath)
		if err != nil {
			return "", "", err
		}
		c.Secret = strings.TrimSpace(string(s))
	}
	if c.Secret == "" {
		return "", "", fmt.Errorf("no 'registration_shared_secret' defined in %s", path)
	}
	return c.Secret, c.Listen, nil
}

// listenURL turns a listen address into a URL to reach it locally.
func listenURL(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "http://" + listen
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "localhost"
	}
	return "http://" + net.JoinHostPort(host, port)
}

func isTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func readLine(in *bufio.Reader) (string, error) {
	line, err := in.ReadString('\n')
	if err != nil && line == "" {
		return "", err
	}
	return strings.TrimRight(line, "\r\n"), nil
}

// readSecret prompts for a password with echo off where stty exists.
func readSecret(in *bufio.Reader, stdout io.Writer, prompt string) (string, error) {
	fmt.Fprint(stdout, prompt)
	if stty("-echo") == nil {
		defer func() {
			stty("echo")
			fmt.Fprintln(stdout)
		}()
	}
	return readLine(in)
}

func stty(arg string) error {
	cmd := exec.Command("stty", arg)
	cmd.Stdin = os.Stdin
	return cmd.Run()
}
