package dag

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"testing"
)

// realPDU is one line of testdata/real_pdus.jsonl (see testdata/README.md).
type realPDU struct {
	Name        string                       `json:"name"`
	RoomVersion string                       `json:"room_version"`
	EventID     string                       `json:"event_id"`
	RoomID      string                       `json:"room_id"`
	Redacted    bool                         `json:"redacted"`
	Keys        map[string]map[string]string `json:"keys"`
	PDU         string                       `json:"pdu"`
}

func loadRealPDUs(t testing.TB) []realPDU {
	t.Helper()
	f, err := os.Open("testdata/real_pdus.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []realPDU
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var p realPDU
		if err := json.Unmarshal(sc.Bytes(), &p); err != nil {
			t.Fatal(err)
		}
		out = append(out, p)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(out) == 0 {
		t.Fatal("no vectors")
	}
	return out
}

// TestRealPDUs checks event IDs, room IDs, content hashes and signatures
// against events other homeservers created and named.
func TestRealPDUs(t *testing.T) {
	for _, p := range loadRealPDUs(t) {
		t.Run(p.Name, func(t *testing.T) {
			ver := Version(p.RoomVersion)
			ev, err := ParseEvent([]byte(p.PDU), ver)
			if err != nil {
				t.Fatalf("ParseEvent: %v", err)
			}
			if ev.ID != p.EventID {
				t.Errorf("event ID %s, want %s", ev.ID, p.EventID)
			}
			if id, err := EventID([]byte(p.PDU), ver); err != nil || id != p.EventID {
				t.Errorf("EventID = %s, %v", id, err)
			}
			if p.RoomID != "" && ev.RoomID != p.RoomID {
				t.Errorf("room ID %s, want %s", ev.RoomID, p.RoomID)
			}
			if !bytes.Equal(ev.Raw, []byte(p.PDU)) {
				t.Error("Raw is not the input")
			}
			err = ev.CheckContentHash()
			if p.Redacted {
				if !errors.Is(err, ErrBadHash) {
					t.Errorf("redacted event: CheckContentHash = %v, want ErrBadHash", err)
				}
			} else if err != nil {
				t.Errorf("CheckContentHash: %v", err)
			}
			for server, keys := range p.Keys {
				for keyID, b64 := range keys {
					pub, err := base64.RawStdEncoding.DecodeString(b64)
					if err != nil {
						t.Fatal(err)
					}
					if err := ev.VerifySignature(server, keyID, pub); err != nil {
						t.Errorf("signature of %s %s: %v", server, keyID, err)
					}
					// A redacted copy still verifies and has the same ID.
					red, err := ev.Redacted()
					if err != nil {
						t.Fatal(err)
					}
					if err := VerifyEvent(red, ver, server, keyID, pub); err != nil {
						t.Errorf("signature on the redacted copy: %v", err)
					}
					if id, err := EventID(red, ver); err != nil || id != p.EventID {
						t.Errorf("redacted copy has ID %s, %v", id, err)
					}
					// Any change to a covered key breaks it.
					tampered := bytes.Replace([]byte(p.PDU), []byte(`"depth":`), []byte(`"depth":1`), 1)
					if bytes.Contains([]byte(p.PDU), []byte(`"depth": `)) {
						tampered = bytes.Replace([]byte(p.PDU), []byte(`"depth": `), []byte(`"depth": 1`), 1)
					}
					if err := VerifyEvent(tampered, ver, server, keyID, pub); !errors.Is(err, ErrBadSignature) {
						t.Errorf("tampered depth: VerifyEvent = %v, want ErrBadSignature", err)
					}
				}
			}
			// The required signer is the sender's server.
			if signers := ev.RequiredSigners(); signers[0] != ServerName(ev.Sender) {
				t.Errorf("RequiredSigners = %v", signers)
			}
		})
	}
}
