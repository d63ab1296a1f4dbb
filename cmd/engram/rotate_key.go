package main

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"engram/api/federation"
	"engram/dag"
)

// Signing key rotation. `engram rotate-key` replaces the signing key with a
// new one and keeps the old public key, with the rotation time, in
// "<signing key path>.old", one line per retired key:
//
//	ed25519 <version> <unpadded base64 public key> <expired_ts ms>
//
// (the shape of Synapse's old_signing_keys, on one line, like signing.key
// itself). Only the public half is kept: a retired key signs nothing any
// more, it only has to verify what it signed before. The server publishes
// these keys in old_verify_keys of /_matrix/key/v2/server with their
// expired_ts, and its own key ring accepts them for events sent before
// then. A running server keeps its key until it is restarted.

// oldKeysPath is where the retired keys of the key at keyPath are kept.
func oldKeysPath(keyPath string) string { return keyPath + ".old" }

// parseOldKeys reads an old keys file. Blank lines and lines starting with
// '#' are skipped.
func parseOldKeys(data []byte) ([]federation.OldKey, error) {
	var out []federation.OldKey
	for n, line := range bytes.Split(data, []byte("\n")) {
		s := strings.TrimSpace(string(line))
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		f := strings.Fields(s)
		if len(f) != 4 || f[0] != "ed25519" {
			return nil, fmt.Errorf("line %d: want \"ed25519 <version> <base64 public key> <expired_ts>\"", n+1)
		}
		pub, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(f[2], "="))
		if err != nil || len(pub) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("line %d: not a base64 ed25519 public key", n+1)
		}
		ts, err := strconv.ParseInt(f[3], 10, 64)
		if err != nil || ts <= 0 {
			return nil, fmt.Errorf("line %d: expired_ts is not a positive integer", n+1)
		}
		if !validKeyVersion(f[1]) {
			return nil, fmt.Errorf("line %d: key version %q is not [a-zA-Z0-9_]+", n+1, f[1])
		}
		out = append(out, federation.OldKey{ID: "ed25519:" + f[1], Public: ed25519.PublicKey(pub), ExpiredTS: ts})
	}
	return out, nil
}

func validKeyVersion(v string) bool {
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return v != ""
}

func marshalOldKeys(keys []federation.OldKey) []byte {
	var b []byte
	for _, k := range keys {
		b = fmt.Appendf(b, "ed25519 %s %s %d\n", strings.TrimPrefix(k.ID, "ed25519:"),
			base64.RawStdEncoding.EncodeToString(k.Public), k.ExpiredTS)
	}
	return b
}

// loadOldKeys reads the retired keys kept next to the signing key at
// keyPath (none if the file does not exist).
func loadOldKeys(keyPath string) ([]federation.OldKey, error) {
	path := oldKeysPath(keyPath)
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	keys, err := parseOldKeys(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return keys, nil
}

// rotateKey runs `engram rotate-key [--config FILE] [--data-dir DIR]
// [--signing-key-path FILE]`: the key file is found as serve finds it
// (file, then ENGRAM_* environment, then flags).
func rotateKey(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("rotate-key", flag.ContinueOnError)
	config := fs.String("config", os.Getenv("ENGRAM_CONFIG"), "YAML config file (env ENGRAM_CONFIG)")
	dataDir := fs.String("data-dir", "", "data directory (env ENGRAM_DATA_DIR)")
	keyPath := fs.String("signing-key-path", "", "the server's signing key file (env ENGRAM_SIGNING_KEY_PATH)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	var c Config
	if *config != "" {
		if err := loadConfigFile(*config, &c); err != nil {
			return err
		}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for name, dst := range map[string]*string{"data-dir": &c.DataDir, "signing-key-path": &c.SigningKeyPath} {
		if v, ok := os.LookupEnv(envName(name)); ok && !set[name] {
			*dst = v
		}
	}
	if set["data-dir"] {
		c.DataDir = *dataDir
	}
	if set["signing-key-path"] {
		c.SigningKeyPath = *keyPath
	}
	c.fillDefaults()
	old, newKey, err := rotateSigningKey(c.SigningKeyPath, time.Now())
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "new signing key %s in %s\nold key %s kept in %s (restart the server to use the new key)\n",
		newKey.ID, c.SigningKeyPath, old.ID, oldKeysPath(c.SigningKeyPath))
	return nil
}

// rotateSigningKey makes a new signing key at keyPath and adds the old one
// to the retired keys, expired at now. The retired keys are written first:
// a crash in between leaves the old key both current and retired, which
// the server tolerates (a retired key with the current key's ID is
// ignored) and a second rotation repairs.
func rotateSigningKey(keyPath string, now time.Time) (old, fresh dag.SigningKey, err error) {
	old, err = dag.LoadSigningKey(keyPath)
	if err != nil {
		return old, fresh, fmt.Errorf("no signing key to rotate: %w", err)
	}
	retired, err := loadOldKeys(keyPath)
	if err != nil {
		return old, fresh, err
	}
	used := map[string]bool{old.ID: true}
	for _, k := range retired {
		used[k.ID] = true
	}
	for {
		if fresh, err = dag.GenerateSigningKey(); err != nil {
			return old, fresh, err
		}
		if !used[fresh.ID] {
			break
		}
	}
	known := false
	for _, k := range retired {
		known = known || k.ID == old.ID
	}
	if !known {
		retired = append(retired, federation.OldKey{ID: old.ID, Public: old.Public(), ExpiredTS: now.UnixMilli()})
	}
	if err := dag.WriteKeyFile(oldKeysPath(keyPath), marshalOldKeys(retired)); err != nil {
		return old, fresh, fmt.Errorf("keeping the old key: %w", err)
	}
	if err := dag.SaveSigningKey(keyPath, fresh); err != nil {
		return old, fresh, err
	}
	return old, fresh, nil
}

// configureFederationKeys gives the federation the retired signing keys
// and the trusted key servers.
func configureFederationKeys(cfg Config, fed *federation.Federation) error {
	old, err := loadOldKeys(cfg.SigningKeyPath)
	if err != nil {
		return fmt.Errorf("old signing keys: %w", err)
	}
	fed.SetOldKeys(old)
	fed.SetTrustedKeyServers(cfg.TrustedKeyServers)
	return nil
}
