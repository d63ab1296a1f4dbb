package dag

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// SigningKey is a server's ed25519 signing key with its key ID.
type SigningKey struct {
	// ID is the full signing key identifier, "ed25519:<version>", where the
	// version matches [a-zA-Z0-9_] (server-server API, "Retrieving server
	// keys": "The key ID ... should match [a-zA-Z0-9_]").
	ID  string
	Key ed25519.PrivateKey
}

// Public returns the verification key.
func (k SigningKey) Public() ed25519.PublicKey {
	if len(k.Key) != ed25519.PrivateKeySize {
		return nil
	}
	return k.Key.Public().(ed25519.PublicKey)
}

// PublicBase64 returns the verification key in unpadded base64, as served in
// /_matrix/key/v2/server verify_keys.
func (k SigningKey) PublicBase64() string {
	return base64.RawStdEncoding.EncodeToString(k.Public())
}

// Version returns the part of the key ID after "ed25519:".
func (k SigningKey) Version() string {
	return strings.TrimPrefix(k.ID, "ed25519:")
}

// GenerateSigningKey makes a new random key with a key ID in Synapse's style,
// "ed25519:a_" followed by four random letters.
func GenerateSigningKey() (SigningKey, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return SigningKey{}, fmt.Errorf("dag: generate signing key: %w", err)
	}
	const letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	var r [4]byte
	if _, err := rand.Read(r[:]); err != nil {
		return SigningKey{}, fmt.Errorf("dag: generate key ID: %w", err)
	}
	v := []byte("a_")
	for _, b := range r {
		v = append(v, letters[int(b)%len(letters)])
	}
	return SigningKey{ID: "ed25519:" + string(v), Key: priv}, nil
}

// SigningKeyFromSeed builds a key from its 32-byte ed25519 seed.
func SigningKeyFromSeed(keyID string, seed []byte) (SigningKey, error) {
	if len(seed) != ed25519.SeedSize {
		return SigningKey{}, fmt.Errorf("%w: seed has %d bytes, want %d", ErrBadKey, len(seed), ed25519.SeedSize)
	}
	k := SigningKey{ID: keyID, Key: ed25519.NewKeyFromSeed(seed)}
	if err := checkSigningKey(k.ID, k.Key); err != nil {
		return SigningKey{}, err
	}
	return k, nil
}

func validKeyVersion(v string) bool {
	if v == "" {
		return false
	}
	for i := 0; i < len(v); i++ {
		b := v[i]
		if !(b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '_') {
			return false
		}
	}
	return true
}

// MarshalSigningKeys encodes keys in Synapse's signing.key format: one line
// per key, "ed25519 <version> <unpadded base64 of the 32-byte seed>".
func MarshalSigningKeys(keys ...SigningKey) ([]byte, error) {
	var out []byte
	for _, k := range keys {
		if err := checkSigningKey(k.ID, k.Key); err != nil {
			return nil, err
		}
		out = append(out, "ed25519 "...)
		out = append(out, k.Version()...)
		out = append(out, ' ')
		out = base64.RawStdEncoding.AppendEncode(out, k.Key.Seed())
		out = append(out, '\n')
	}
	return out, nil
}

// ParseSigningKeys decodes Synapse's signing.key format. Blank lines are
// skipped; padded base64 is accepted too.
func ParseSigningKeys(data []byte) ([]SigningKey, error) {
	var keys []SigningKey
	for n, line := range bytes.Split(data, []byte("\n")) {
		f := strings.Fields(string(line))
		if len(f) == 0 {
			continue
		}
		if len(f) != 3 {
			return nil, fmt.Errorf("%w: line %d: want \"ed25519 <version> <base64 seed>\"", ErrBadKey, n+1)
		}
		if f[0] != "ed25519" {
			return nil, fmt.Errorf("%w: line %d: unsupported algorithm %q", ErrBadKey, n+1, f[0])
		}
		seed, err := decodeBase64(f[2])
		if err != nil {
			return nil, fmt.Errorf("%w: line %d: seed is not base64", ErrBadKey, n+1)
		}
		k, err := SigningKeyFromSeed("ed25519:"+f[1], seed)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n+1, err)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w: no keys found", ErrBadKey)
	}
	return keys, nil
}

// LoadSigningKey reads the first key of a Synapse-format signing key file.
func LoadSigningKey(path string) (SigningKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return SigningKey{}, fmt.Errorf("dag: read signing key: %w", err)
	}
	keys, err := ParseSigningKeys(data)
	if err != nil {
		return SigningKey{}, fmt.Errorf("%s: %w", path, err)
	}
	return keys[0], nil
}

// SaveSigningKey writes a Synapse-format key file readable only by its owner.
// It writes a temporary file in the same directory, syncs it and renames it,
// so a crash never leaves a truncated key behind.
func SaveSigningKey(path string, k SigningKey) error {
	data, err := MarshalSigningKeys(k)
	if err != nil {
		return err
	}
	if err := WriteKeyFile(path, data); err != nil {
		return fmt.Errorf("dag: save signing key: %w", err)
	}
	return nil
}

// WriteKeyFile writes a key file readable only by its owner through a
// synced temporary file and a rename, so a crash leaves the old or the new
// content, never a mix.
func WriteKeyFile(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(0o600)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}
