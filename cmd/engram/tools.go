package main

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/bcrypt"
	"gopkg.in/yaml.v3"

	"engram/bench"
	"engram/log"
	"engram/projections"
)

// generateConfig prints a YAML configuration and creates the signing key.
func generateConfig(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("generate-config", flag.ContinueOnError)
	name := fs.String("server-name", "", "the server's name (required)")
	dir := fs.String("data-dir", "./data", "data directory")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *name == "" {
		return fmt.Errorf("--server-name is required")
	}
	var secret [24]byte
	rand.Read(secret[:])
	c := Config{
		ServerName:               *name,
		DataDir:                  *dir,
		ClientListen:             "127.0.0.1:8008",
		FederationListen:         "0.0.0.0:8448",
		TLSCert:                  filepath.Join(*dir, "tls.crt"),
		TLSKey:                   filepath.Join(*dir, "tls.key"),
		RegistrationSharedSecret: base64.RawURLEncoding.EncodeToString(secret[:]),
		SigningKeyPath:           filepath.Join(*dir, "signing.key"),
		// As Synapse's generated config: the notary asked when a server
		// cannot be reached for its keys.
		TrustedKeyServers: []string{"matrix.org"},
	}
	c.fillDefaults()
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		return err
	}
	if _, err := signingKey(c.SigningKeyPath); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "# engram configuration for %s\n", *name)
	enc := yaml.NewEncoder(stdout)
	enc.SetIndent(2)
	return enc.Encode(&c)
}

// hashPassword prints a bcrypt hash of a password read from -p or stdin.
func hashPassword(args []string, stdin io.Reader, stdout io.Writer) error {
	fs := flag.NewFlagSet("hash-password", flag.ContinueOnError)
	pw := fs.String("p", "", "password (read from standard input if absent)")
	cost := fs.Int("cost", 12, "bcrypt cost")
	if err := fs.Parse(args); err != nil {
		return err
	}
	p := *pw
	if p == "" {
		line, err := bufio.NewReader(stdin).ReadString('\n')
		if err != nil && line == "" {
			return fmt.Errorf("no password given")
		}
		p = strings.TrimRight(line, "\r\n")
	}
	h, err := bcrypt.GenerateFromPassword([]byte(p), *cost)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, string(h))
	return nil
}

// replay rebuilds every projection from position 1. With --verify it
// rebuilds into scratch space and compares digests with the live rows,
// failing on any difference; without, it rebuilds the live rows in place.
func replay(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	dir := fs.String("data-dir", "", "data directory (required)")
	verify := fs.Bool("verify", false, "rebuild into scratch space and compare with the live projections")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" {
		return fmt.Errorf("--data-dir is required")
	}
	set, err := projections.All()
	if err != nil {
		return err
	}
	dbDir := filepath.Join(*dir, "db")
	if _, err := os.Stat(dbDir); err != nil {
		return fmt.Errorf("no log at %s: %w", dbDir, err)
	}
	// The live projections are brought up to the log first: replay compares
	// a rebuild with what the server would serve.
	l, err := log.Open(log.Options{Dir: dbDir, Apply: set.Apply})
	if err != nil {
		return err
	}
	defer l.Close()
	if err := set.CatchUp(l, l.DB()); err != nil {
		return err
	}
	if !*verify {
		if err := set.Reset(l, l.DB()); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "rebuilt %d projections from %d records\n", len(set.Projections()), l.Last())
		return nil
	}
	scratch, err := os.MkdirTemp(*dir, "replay-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(scratch)
	db, err := set.Rebuild(l, scratch)
	if err != nil {
		return err
	}
	defer db.Close()
	bad, err := set.Compare(l.DB(), db)
	if err != nil {
		return err
	}
	for _, p := range set.Projections() {
		status := "ok"
		for _, m := range bad {
			if m.Name == p.Name() {
				status = fmt.Sprintf("MISMATCH live=%x rebuilt=%x", m.Live[:8], m.Scan[:8])
			}
		}
		fmt.Fprintf(stdout, "%-12s %s\n", p.Name(), status)
	}
	fmt.Fprintf(stdout, "replayed %d records\n", l.Last())
	if len(bad) > 0 {
		return fmt.Errorf("%d projections differ from their rebuild", len(bad))
	}
	return nil
}

func benchMain(args []string, stdout, stderr io.Writer) int {
	return bench.Main(args, stdout, stderr)
}
