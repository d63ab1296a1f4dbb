package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
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
