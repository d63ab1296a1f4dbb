package dag

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// specKey is the key of the appendices, "Cryptographic Test Vectors":
// SIGNING_KEY_SEED = decode_base64("YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1"),
// SERVER_NAME = "domain", KEY_ID = "ed25519:1".
func specKey(t testing.TB) SigningKey {
	t.Helper()
	seed, err := decodeBase64("YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1")
	if err != nil {
		t.Fatal(err)
	}
	k, err := SigningKeyFromSeed("ed25519:1", seed)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// The appendices, "JSON Signing".
func TestSignJSONSpecVectors(t *testing.T) {
	k := specKey(t)
	tests := []struct{ in, want string }{
		{`{}`, `{"signatures":{"domain":{"ed25519:1":"K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ"}}}`},
		{`{"one": 1, "two": "Two"}`, `{"one":1,"signatures":{"domain":{"ed25519:1":"KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw"}},"two":"Two"}`},
	}
	for _, tt := range tests {
		got, err := SignJSON([]byte(tt.in), "domain", k.ID, k.Key)
		if err != nil {
			t.Fatalf("SignJSON(%s): %v", tt.in, err)
		}
		if string(got) != tt.want {
			t.Errorf("SignJSON(%s) =\n%s\nwant\n%s", tt.in, got, tt.want)
		}
		if err := VerifyJSON([]byte(tt.want), "domain", "ed25519:1", k.Public()); err != nil {
			t.Errorf("VerifyJSON(spec output): %v", err)
		}
	}
}

// The server key example of the appendices, "Signing Details", is signed
// with a key the spec does not give; what we can check is that unsigned and
// existing signatures survive signing and are not covered by it.
func TestSignJSONKeepsUnsignedAndOtherSignatures(t *testing.T) {
	k := specKey(t)
	in := `{"name":"example.org","signatures":{"example.org":{"ed25519:1":"s76RUgajp8w172am0zQb/iPTHsRnb4SkrzGoeCOSFfcBY2V/1c8QfrmdXHpvnc2jK5BD1WiJIxiMW95fMjK7Bw"}},"signing_keys":{"ed25519:1":"XSl0kuyvrXNj6A+7/tkrB9sxSbRi08Of5uRhxOqZtEQ"},"unsigned":{"age_ts":922834800000}}`
	out, err := SignJSON([]byte(in), "domain", k.ID, k.Key)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"example.org":{"ed25519:1":"s76R`, `"unsigned":{"age_ts":922834800000}`, `"domain":{"ed25519:1":`} {
		if !strings.Contains(string(out), want) {
			t.Errorf("signed object %s lacks %s", out, want)
		}
	}
	if !IsCanonical(out) {
		t.Errorf("SignJSON output is not canonical: %s", out)
	}
	// Changing unsigned or adding signatures keeps ours valid.
	edited := strings.Replace(string(out), `"age_ts":922834800000`, `"age_ts":1`, 1)
	edited2, err := SignJSON([]byte(edited), "other.org", k.ID, k.Key)
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyJSON(edited2, "domain", k.ID, k.Public()); err != nil {
		t.Errorf("signature broken by unsigned/other signatures: %v", err)
	}
	// A second signature from the same server with another key merges.
	k2, _ := GenerateSigningKey()
	both, err := SignJSON(edited2, "domain", k2.ID, k2.Key)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := SignatureKeyIDs(both, "domain")
	if err != nil || len(ids) != 2 {
		t.Fatalf("SignatureKeyIDs = %v, %v; want two", ids, err)
	}
	for _, kk := range []SigningKey{k, k2} {
		if err := VerifyJSON(both, "domain", kk.ID, kk.Public()); err != nil {
			t.Errorf("VerifyJSON with %s: %v", kk.ID, err)
		}
	}
	// Re-signing with the same key replaces, not duplicates.
	again, err := SignJSON(both, "domain", k.ID, k.Key)
	if err != nil || string(again) != string(both) {
		t.Errorf("re-signing changed the object (ed25519 is deterministic):\n%s\n%s", both, again)
	}
}

func TestVerifyJSONFailures(t *testing.T) {
	k := specKey(t)
	signed, err := SignJSON([]byte(`{"one":1,"two":"Two"}`), "domain", k.ID, k.Key)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := GenerateSigningKey()
	tests := []struct {
		name           string
		raw            string
		server, keyID  string
		pub            ed25519.PublicKey
		wantErr        error
		wantErrMessage string
	}{
		{"ok", string(signed), "domain", "ed25519:1", k.Public(), nil, ""},
		{"ok non-canonical input", `{"two": "Two", "signatures": {"domain": {"ed25519:1": "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw=="}}, "one": 1}`, "domain", "ed25519:1", k.Public(), nil, ""},
		{"tampered", strings.Replace(string(signed), `"one":1`, `"one":2`, 1), "domain", "ed25519:1", k.Public(), ErrBadSignature, "does not verify"},
		{"wrong key", string(signed), "domain", "ed25519:1", other.Public(), ErrBadSignature, "does not verify"},
		{"no such server", string(signed), "elsewhere", "ed25519:1", k.Public(), ErrNoSignature, "no signatures from elsewhere"},
		{"no such key", string(signed), "domain", "ed25519:2", k.Public(), ErrNoSignature, "with key ed25519:2"},
		{"no signatures", `{"a":1}`, "domain", "ed25519:1", k.Public(), ErrNoSignature, "no signatures"},
		{"bad base64", `{"signatures":{"domain":{"ed25519:1":"!!!"}}}`, "domain", "ed25519:1", k.Public(), ErrBadSignature, "not base64"},
		{"short signature", `{"signatures":{"domain":{"ed25519:1":"AAAA"}}}`, "domain", "ed25519:1", k.Public(), ErrBadSignature, "not base64"},
		{"unknown algorithm", string(signed), "domain", "curve25519:1", k.Public(), ErrBadSignature, "unsupported"},
		{"short public key", string(signed), "domain", "ed25519:1", ed25519.PublicKey{1, 2}, ErrBadKey, "public key"},
		{"not an object", `[1]`, "domain", "ed25519:1", k.Public(), ErrBadJSON, "objects"},
		{"bad json", `{`, "domain", "ed25519:1", k.Public(), ErrBadJSON, ""},
	}
	for _, tt := range tests {
		err := VerifyJSON([]byte(tt.raw), tt.server, tt.keyID, tt.pub)
		if tt.wantErr == nil {
			if err != nil {
				t.Errorf("%s: %v", tt.name, err)
			}
			continue
		}
		if !errors.Is(err, tt.wantErr) || !strings.Contains(errString(err), tt.wantErrMessage) {
			t.Errorf("%s: got %v, want %v mentioning %q", tt.name, err, tt.wantErr, tt.wantErrMessage)
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func TestSignJSONRejects(t *testing.T) {
	k := specKey(t)
	tests := []struct {
		name, raw, keyID string
		key              ed25519.PrivateKey
		want             error
	}{
		{"array", `[]`, k.ID, k.Key, ErrBadJSON},
		{"invalid", `{"a":}`, k.ID, k.Key, ErrBadJSON},
		{"signatures not object", `{"signatures":1}`, k.ID, k.Key, ErrBadJSON},
		{"server entry not object", `{"signatures":{"domain":[]}}`, k.ID, k.Key, ErrBadJSON},
		{"bad key id", `{}`, "ed25519:a-b", k.Key, ErrBadKey},
		{"no algorithm", `{}`, "1", k.Key, ErrBadKey},
		{"short key", `{}`, k.ID, ed25519.PrivateKey{1}, ErrBadKey},
	}
	for _, tt := range tests {
		if _, err := SignJSON([]byte(tt.raw), "domain", tt.keyID, tt.key); !errors.Is(err, tt.want) {
			t.Errorf("%s: got %v, want %v", tt.name, err, tt.want)
		}
	}
}

func TestSigningKeyFile(t *testing.T) {
	// A key file as Synapse writes it, holding the spec's test seed.
	file := "ed25519 a_AbCd YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1\n"
	keys, err := ParseSigningKeys([]byte(file))
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 || keys[0].ID != "ed25519:a_AbCd" || keys[0].Version() != "a_AbCd" {
		t.Fatalf("parsed %+v", keys)
	}
	if !keys[0].Key.Equal(specKey(t).Key) {
		t.Error("parsed key differs from the spec seed")
	}
	// The spec's seed string has non-zero padding bits in its last
	// character; written back, it gets the canonical encoding.
	out, err := MarshalSigningKeys(keys...)
	if want := "ed25519 a_AbCd YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA0\n"; err != nil || string(out) != want {
		t.Errorf("MarshalSigningKeys = %q, %v; want %q", out, err, want)
	}
	pub := keys[0].PublicBase64()
	if dec, err := base64.RawStdEncoding.DecodeString(pub); err != nil || len(dec) != 32 {
		t.Errorf("PublicBase64 %q is not unpadded base64 of 32 bytes", pub)
	}

	// Several keys, blank lines, padded base64.
	multi := "\ned25519 a_1 YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1=\n\ned25519 b_2 " + base64.RawStdEncoding.EncodeToString(make([]byte, 32)) + "\n"
	if keys, err := ParseSigningKeys([]byte(multi)); err != nil || len(keys) != 2 || keys[1].ID != "ed25519:b_2" {
		t.Errorf("multi-key file: %+v, %v", keys, err)
	}

	bad := []struct{ name, file string }{
		{"empty", ""},
		{"two fields", "ed25519 a_1\n"},
		{"four fields", "ed25519 a_1 AAAA extra\n"},
		{"other algorithm", "curve25519 a_1 YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1\n"},
		{"bad base64", "ed25519 a_1 !!!!\n"},
		{"short seed", "ed25519 a_1 AAAA\n"},
		{"bad version", "ed25519 a-1 YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1\n"},
	}
	for _, tt := range bad {
		if _, err := ParseSigningKeys([]byte(tt.file)); !errors.Is(err, ErrBadKey) {
			t.Errorf("%s: got %v, want ErrBadKey", tt.name, err)
		}
	}
}

func TestGenerateSaveLoadSigningKey(t *testing.T) {
	k, err := GenerateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(k.ID, "ed25519:a_") || len(k.Version()) != 6 || !validKeyVersion(k.Version()) {
		t.Errorf("generated key ID %q", k.ID)
	}
	path := filepath.Join(t.TempDir(), "signing.key")
	if err := SaveSigningKey(path, k); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, %v; want 0600", st.Mode(), err)
	}
	got, err := LoadSigningKey(path)
	if err != nil || got.ID != k.ID || !got.Key.Equal(k.Key) {
		t.Errorf("LoadSigningKey = %+v, %v", got, err)
	}
	if _, err := LoadSigningKey(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("loading a missing file succeeded")
	}
	signed, err := SignJSON([]byte(`{"x":1}`), "srv", got.ID, got.Key)
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyJSON(signed, "srv", k.ID, k.Public()); err != nil {
		t.Error(err)
	}
	if (SigningKey{}).Public() != nil {
		t.Error("zero SigningKey has a public key")
	}
}

// Objects with numbers strict canonical JSON rejects (events of room
// versions 1-5 inside a request body) can still be signed and verified.
func TestSignJSONLenientNumbers(t *testing.T) {
	k := specKey(t)
	out, err := SignJSON([]byte(`{"pdus":[{"content":{"ban":50.57,"big":9007199254740993}}]}`), "domain", k.ID, k.Key)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), `"ban":50.57,"big":9007199254740993`) {
		t.Errorf("numbers changed: %s", out)
	}
	if err := VerifyJSON(out, "domain", k.ID, k.Public()); err != nil {
		t.Error(err)
	}
}

func TestGetMemberEscapedKey(t *testing.T) {
	obj := []byte(`{"a\"b":1,"plain":2}`)
	if v := getMember(obj, `a"b`); string(v) != "1" {
		t.Errorf("escaped key: %q", v)
	}
	if v := getMember(obj, "plain"); string(v) != "2" {
		t.Errorf("plain key: %q", v)
	}
	if v := getMember(obj, "missing"); v != nil {
		t.Errorf("missing key: %q", v)
	}
	out, err := setMember(nil, obj, `a"b`, []byte("3"))
	if err != nil || string(out) != `{"a\"b":3,"plain":2}` {
		t.Errorf("setMember escaped: %s, %v", out, err)
	}
	out, err = setMember(nil, []byte(`{}`), "k", []byte("1"))
	if err != nil || string(out) != `{"k":1}` {
		t.Errorf("setMember into empty: %s, %v", out, err)
	}
	out, err = setMember(nil, []byte(`{"a":1,"c":3}`), "b", []byte("2"))
	if err != nil || string(out) != `{"a":1,"b":2,"c":3}` {
		t.Errorf("setMember middle: %s, %v", out, err)
	}
	out, err = setMember(nil, []byte(`{"b":1}`), "a", []byte("0"))
	if err != nil || string(out) != `{"a":0,"b":1}` {
		t.Errorf("setMember first: %s, %v", out, err)
	}
}
