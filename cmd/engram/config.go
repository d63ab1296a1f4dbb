package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"engram/api"
)

// Config is engram's configuration: YAML file, then ENGRAM_* environment
// variables, then flags, each overriding the one before.
type Config struct {
	ServerName               string `yaml:"server_name"`
	DataDir                  string `yaml:"data_dir"`
	ClientListen             string `yaml:"client_listen"`
	FederationListen         string `yaml:"federation_listen"`
	TLSCert                  string `yaml:"tls_cert"`
	TLSKey                   string `yaml:"tls_key"`
	FederationCA             string `yaml:"federation_ca"`
	RegistrationSharedSecret string `yaml:"registration_shared_secret"`
	EnableRegistration       bool   `yaml:"enable_registration"`
	SigningKeyPath           string `yaml:"signing_key_path"`
	MaxBodyBytes             int    `yaml:"max_body_bytes"`
	DefaultRoomVersion       string `yaml:"default_room_version"`
	PasswordCost             int    `yaml:"password_cost"`
	CacheBytes               int64  `yaml:"cache_bytes"`
	LogLevel                 string `yaml:"log_level"`
	EnableMetrics            bool   `yaml:"enable_metrics"`
	// TURN for VoIP: coturn with use-auth-secret (static-auth-secret).
	TURNURIs         []string `yaml:"turn_uris"`
	TURNSharedSecret string   `yaml:"turn_shared_secret"`
	TURNUserLifetime string   `yaml:"turn_user_lifetime"` // Go duration, default 1h
	// PresenceEnabled turns presence on or off (Synapse's presence.enabled);
	// absent means on.
	PresenceEnabled *bool `yaml:"presence_enabled,omitempty"`

	// Accounts: discovery, registration tokens, login tokens, refresh
	// tokens, rate limits (api.AccountConfig; names as in Synapse).
	PublicBaseURL                  string                   `yaml:"public_baseurl,omitempty"`
	WellKnownServer                string                   `yaml:"well_known_server,omitempty"`
	RegistrationRequiresToken      bool                     `yaml:"registration_requires_token,omitempty"`
	RegistrationTokens             []string                 `yaml:"registration_tokens,omitempty"`
	LoginViaExistingSession        *LoginViaExistingSession `yaml:"login_via_existing_session,omitempty"`
	RefreshableAccessTokenLifetime string                   `yaml:"refreshable_access_token_lifetime,omitempty"`
	RCLogin                        *RCLogin                 `yaml:"rc_login,omitempty"`
	RCRegistration                 *RateLimitConfig         `yaml:"rc_registration,omitempty"`
	RCLoopback                     bool                     `yaml:"rc_loopback,omitempty"`
	XForwarded                     bool                     `yaml:"x_forwarded,omitempty"`

	// TrustedKeyServers are the notaries asked for a server's signing keys
	// when the server cannot be reached (Synapse's trusted_key_servers,
	// names only: a notary's own key is fetched from the notary).
	TrustedKeyServers []string `yaml:"trusted_key_servers,omitempty"`
}

// devConfig is the embedded default of `serve --dev` and `make run`.
func devConfig() Config {
	return Config{
		ServerName:         "localhost",
		DataDir:            "./data",
		ClientListen:       "127.0.0.1:8008",
		EnableRegistration: true,
		EnableMetrics:      true,
	}
}

func (c *Config) fillDefaults() {
	c.fillAccountDefaults()
	if c.DataDir == "" {
		c.DataDir = "./data"
	}
	if c.ClientListen == "" {
		c.ClientListen = "127.0.0.1:8008"
	}
	if c.SigningKeyPath == "" {
		c.SigningKeyPath = filepath.Join(c.DataDir, "signing.key")
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = 1 << 20
	}
	if c.DefaultRoomVersion == "" {
		c.DefaultRoomVersion = "12"
	}
	if c.PasswordCost == 0 {
		c.PasswordCost = 10
	}
	if c.CacheBytes == 0 {
		c.CacheBytes = 64 << 20
	}
	if c.LogLevel == "" {
		c.LogLevel = "info"
	}
}

func (c *Config) validate() error {
	if c.TURNUserLifetime != "" {
		if d, err := time.ParseDuration(c.TURNUserLifetime); err != nil || d <= 0 {
			return fmt.Errorf("turn_user_lifetime: %q is not a positive duration (e.g. 1h)", c.TURNUserLifetime)
		}
	}
	if _, err := c.accessTokenLifetime(); err != nil {
		return err
	}
	if c.ServerName == "" {
		return fmt.Errorf("server_name is required (or use --dev)")
	}
	if (c.FederationListen != "") && (c.TLSCert == "" || c.TLSKey == "") {
		return fmt.Errorf("federation_listen needs tls_cert and tls_key")
	}
	return nil
}

func loadConfigFile(path string, c *Config) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// serveFlags binds the command-line contract's flags. Each flag FOO-BAR can
// also be set as ENGRAM_FOO_BAR.
type serveFlags struct {
	fs     *flag.FlagSet
	config string
	dev    bool
	values map[string]*string
	bools  map[string]*bool
}

var stringFlags = []struct{ name, usage string }{
	{"server-name", "the server's name (the part after ':' in user IDs)"},
	{"data-dir", "directory for the log, projections and keys"},
	{"client-listen", "ADDR:PORT for the plain-HTTP client-server API"},
	{"federation-listen", "ADDR:PORT for the TLS federation API"},
	{"tls-cert", "TLS certificate file for federation"},
	{"tls-key", "TLS key file for federation"},
	{"federation-ca", "extra CA certificate trusted for outbound federation"},
	{"registration-shared-secret", "shared secret for admin registration"},
	{"signing-key-path", "the server's signing key file"},
	{"max-body-bytes", "largest accepted request body"},
	{"default-room-version", "room version of new rooms"},
	{"log-level", "debug, info, warn or error"},
	{"password-cost", "bcrypt cost of stored password hashes (4-31)"},
	{"trusted-key-servers", "comma-separated notaries asked for keys of unreachable servers"},
}

func newServeFlags(name string) *serveFlags {
	sf := &serveFlags{fs: flag.NewFlagSet(name, flag.ContinueOnError), values: map[string]*string{}, bools: map[string]*bool{}}
	sf.fs.StringVar(&sf.config, "config", os.Getenv("ENGRAM_CONFIG"), "YAML config file")
	sf.fs.BoolVar(&sf.dev, "dev", envBool("ENGRAM_DEV"), "development defaults: server name localhost, client API on 127.0.0.1:8008, data in ./data, open registration")
	for _, f := range stringFlags {
		sf.values[f.name] = sf.fs.String(f.name, "", f.usage+" (env "+envName(f.name)+")")
	}
	sf.bools["enable-registration"] = sf.fs.Bool("enable-registration", false, "allow open registration (env ENGRAM_ENABLE_REGISTRATION)")
	sf.bools["enable-metrics"] = sf.fs.Bool("enable-metrics", false, "serve Prometheus metrics at /metrics on the client listener (env ENGRAM_ENABLE_METRICS)")
	return sf
}

func envName(flagName string) string {
	return "ENGRAM_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

func envBool(name string) bool {
	b, _ := strconv.ParseBool(os.Getenv(name))
	return b
}

// resolve builds the configuration: defaults, file, environment, flags.
func (sf *serveFlags) resolve(args []string) (Config, error) {
	if err := sf.fs.Parse(args); err != nil {
		return Config{}, err
	}
	var c Config
	if sf.dev {
		c = devConfig()
	}
	if sf.config != "" {
		if err := loadConfigFile(sf.config, &c); err != nil {
			return Config{}, err
		}
	}
	set := map[string]bool{}
	sf.fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	apply := func(name, v string) error {
		switch name {
		case "server-name":
			c.ServerName = v
		case "data-dir":
			c.DataDir = v
		case "client-listen":
			c.ClientListen = v
		case "federation-listen":
			c.FederationListen = v
		case "tls-cert":
			c.TLSCert = v
		case "tls-key":
			c.TLSKey = v
		case "federation-ca":
			c.FederationCA = v
		case "registration-shared-secret":
			c.RegistrationSharedSecret = v
		case "signing-key-path":
			c.SigningKeyPath = v
		case "max-body-bytes":
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 {
				return fmt.Errorf("--max-body-bytes: %q is not a positive integer", v)
			}
			c.MaxBodyBytes = n
		case "default-room-version":
			c.DefaultRoomVersion = v
		case "log-level":
			c.LogLevel = v
		case "password-cost":
			n, err := strconv.Atoi(v)
			if err != nil || n < 4 || n > 31 {
				return fmt.Errorf("--password-cost: %q is not in 4..31", v)
			}
			c.PasswordCost = n
		case "trusted-key-servers":
			c.TrustedKeyServers = nil
			for _, s := range strings.Split(v, ",") {
				if s = strings.TrimSpace(s); s != "" {
					c.TrustedKeyServers = append(c.TrustedKeyServers, s)
				}
			}
		case "enable-registration", "enable-metrics":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return fmt.Errorf("--%s: %q is not a boolean", name, v)
			}
			if name == "enable-metrics" {
				c.EnableMetrics = b
			} else {
				c.EnableRegistration = b
			}
		}
		return nil
	}
	names := append([]string{"enable-registration", "enable-metrics"}, func() []string {
		var n []string
		for _, f := range stringFlags {
			n = append(n, f.name)
		}
		return n
	}()...)
	for _, name := range names {
		if v, ok := os.LookupEnv(envName(name)); ok && !set[name] {
			if err := apply(name, v); err != nil {
				return Config{}, fmt.Errorf("%s: %w", envName(name), err)
			}
		}
		if set[name] {
			var v string
			if p, ok := sf.values[name]; ok {
				v = *p
			} else {
				v = strconv.FormatBool(*sf.bools[name])
			}
			if err := apply(name, v); err != nil {
				return Config{}, err
			}
		}
	}
	c.fillDefaults()
	return c, c.validate()
}

// RateLimitConfig is one rate limit: burst_count actions at once, refilled
// at per_second (Synapse's rc_* shape). per_second <= 0 disables it.
type RateLimitConfig struct {
	PerSecond  float64 `yaml:"per_second"`
	BurstCount int     `yaml:"burst_count"`
}

// RCLogin is Synapse's rc_login: per client address, per account, and per
// account for failed password checks.
type RCLogin struct {
	Address        *RateLimitConfig `yaml:"address,omitempty"`
	Account        *RateLimitConfig `yaml:"account,omitempty"`
	FailedAttempts *RateLimitConfig `yaml:"failed_attempts,omitempty"`
}

// LoginViaExistingSession enables POST /login/get_token (as in Synapse).
type LoginViaExistingSession struct {
	Enabled bool `yaml:"enabled"`
}

// fillAccountDefaults makes the rate limits explicit, so generate-config
// prints them. Loopback clients are exempt unless rc_loopback is set: tests
// and benchmarks register many users from 127.0.0.1.
func (c *Config) fillAccountDefaults() {
	d := api.DefaultRateLimits()
	def := func(p **RateLimitConfig, l api.Limit) {
		if *p == nil {
			*p = &RateLimitConfig{PerSecond: l.PerSecond, BurstCount: l.Burst}
		}
	}
	if c.RCLogin == nil {
		c.RCLogin = &RCLogin{}
	}
	def(&c.RCLogin.Address, d.LoginAddress)
	def(&c.RCLogin.Account, d.LoginAccount)
	def(&c.RCLogin.FailedAttempts, d.LoginFailed)
	def(&c.RCRegistration, d.Registration)
}

// accessTokenLifetime parses refreshable_access_token_lifetime: a Go
// duration ("5m"); empty means the default (5 minutes); "off" disables
// refresh tokens.
func (c *Config) accessTokenLifetime() (time.Duration, error) {
	switch v := c.RefreshableAccessTokenLifetime; v {
	case "":
		return 0, nil
	case "off", "none", "false":
		return -1, nil
	default:
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return 0, fmt.Errorf("refreshable_access_token_lifetime: %q is not a positive duration (or off)", v)
		}
		return d, nil
	}
}

// accountsConfig is the api's view of the account settings.
func accountsConfig(c Config) api.AccountConfig {
	lim := func(r *RateLimitConfig) api.Limit {
		if r == nil {
			return api.Limit{}
		}
		return api.Limit{PerSecond: r.PerSecond, Burst: r.BurstCount}
	}
	rl := api.DefaultRateLimits()
	if c.RCLogin != nil {
		if c.RCLogin.Address != nil {
			rl.LoginAddress = lim(c.RCLogin.Address)
		}
		if c.RCLogin.Account != nil {
			rl.LoginAccount = lim(c.RCLogin.Account)
		}
		if c.RCLogin.FailedAttempts != nil {
			rl.LoginFailed = lim(c.RCLogin.FailedAttempts)
		}
	}
	if c.RCRegistration != nil {
		rl.Registration = lim(c.RCRegistration)
	}
	rl.Loopback = c.RCLoopback
	life, _ := c.accessTokenLifetime() // checked by validate
	return api.AccountConfig{
		PublicBaseURL:             c.PublicBaseURL,
		WellKnownServer:           c.WellKnownServer,
		RegistrationRequiresToken: c.RegistrationRequiresToken,
		RegistrationTokens:        c.RegistrationTokens,
		LoginToken:                c.LoginViaExistingSession != nil && c.LoginViaExistingSession.Enabled,
		AccessTokenLifetime:       life,
		RateLimits:                &rl,
		TrustForwardedFor:         c.XForwarded,
	}
}
