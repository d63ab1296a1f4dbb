package dag

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
)

// The appendices, "Event Signing": two events, hashed and signed with the
// spec key. The events carry a top-level origin, which the redaction
// algorithm protects in room versions 1-10 only, so the spec signatures are
// those of these versions.
var specEventVectors = []struct {
	name, in, hash, want string
}{
	{
		name: "minimal",
		in: `{
    "room_id": "!x:domain",
    "sender": "@a:domain",
    "origin": "domain",
    "origin_server_ts": 1000000,
    "signatures": {},
    "hashes": {},
    "type": "X",
    "content": {},
    "prev_events": [],
    "auth_events": [],
    "depth": 3,
    "unsigned": {
        "age_ts": 1000000
    }
}`,
		hash: "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos",
		want: `{
    "auth_events": [],
    "content": {},
    "depth": 3,
    "hashes": {
        "sha256": "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"
    },
    "origin": "domain",
    "origin_server_ts": 1000000,
    "prev_events": [],
    "room_id": "!x:domain",
    "sender": "@a:domain",
    "signatures": {
        "domain": {
            "ed25519:1": "KxwGjPSDEtvnFgU00fwFz+l6d2pJM6XBIaMEn81SXPTRl16AqLAYqfIReFGZlHi5KLjAWbOoMszkwsQma+lYAg"
        }
    },
    "type": "X",
    "unsigned": {
        "age_ts": 1000000
    }
}`,
	},
	{
		name: "redactable content",
		in: `{
    "content": {
        "body": "Here is the message content"
    },
    "event_id": "$0:domain",
    "origin": "domain",
    "origin_server_ts": 1000000,
    "type": "m.room.message",
    "room_id": "!r:domain",
    "sender": "@u:domain",
    "signatures": {},
    "unsigned": {
        "age_ts": 1000000
    }
}`,
		hash: "onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g",
		want: `{
    "content": {
        "body": "Here is the message content"
    },
    "event_id": "$0:domain",
    "hashes": {
        "sha256": "onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g"
    },
    "origin": "domain",
    "origin_server_ts": 1000000,
    "type": "m.room.message",
    "room_id": "!r:domain",
    "sender": "@u:domain",
    "signatures": {
        "domain": {
            "ed25519:1": "Wm+VzmOUOz08Ds+0NTWb1d4CZrVsJSikkeRxh6aCcUwu6pNC78FunoD7KNWzqFn241eYHYMGCA5McEiVPdhzBA"
        }
    },
    "unsigned": {
        "age_ts": 1000000
    }
}`,
	},
}

func TestEventSigningSpecVectors(t *testing.T) {
	k := specKey(t)
	for _, tt := range specEventVectors {
		for _, id := range []string{"1", "2", "3", "4", "5", "6", "7", "8", "9", "10"} {
			ver := Version(id)
			sum, err := ContentHash([]byte(tt.in), ver)
			if err != nil {
				t.Fatalf("%s v%s: ContentHash: %v", tt.name, id, err)
			}
			if got := base64.RawStdEncoding.EncodeToString(sum[:]); got != tt.hash {
				t.Errorf("%s v%s: content hash %s, want %s", tt.name, id, got, tt.hash)
			}
			hashed, err := AddContentHash([]byte(tt.in), ver)
			if err != nil {
				t.Fatalf("%s v%s: AddContentHash: %v", tt.name, id, err)
			}
			if err := CheckContentHash(hashed, ver); err != nil {
				t.Errorf("%s v%s: CheckContentHash after AddContentHash: %v", tt.name, id, err)
			}
			signed, err := SignEvent(hashed, ver, "domain", k.ID, k.Key)
			if err != nil {
				t.Fatalf("%s v%s: SignEvent: %v", tt.name, id, err)
			}
			want, err := Canonical(nil, []byte(tt.want), true)
			if err != nil {
				t.Fatal(err)
			}
			if string(signed) != string(want) {
				t.Errorf("%s v%s: signed event\n%s\nwant\n%s", tt.name, id, signed, want)
			}
			if err := VerifyEvent([]byte(tt.want), ver, "domain", k.ID, k.Public()); err != nil {
				t.Errorf("%s v%s: VerifyEvent(spec output): %v", tt.name, id, err)
			}
			if err := CheckContentHash([]byte(tt.want), ver); err != nil {
				t.Errorf("%s v%s: CheckContentHash(spec output): %v", tt.name, id, err)
			}
			// The signature covers the redacted event, so it verifies on
			// a redacted copy too ("this step should succeed whether we
			// have been sent the full event or a redacted copy"), while
			// the content hash then no longer matches.
			red, err := Redact([]byte(tt.want), ver)
			if err != nil {
				t.Fatal(err)
			}
			if err := VerifyEvent(red, ver, "domain", k.ID, k.Public()); err != nil {
				t.Errorf("%s v%s: VerifyEvent(redacted): %v", tt.name, id, err)
			}
			if tt.name == "redactable content" {
				if err := CheckContentHash(red, ver); !errors.Is(err, ErrBadHash) {
					t.Errorf("%s v%s: CheckContentHash(redacted) = %v, want ErrBadHash", tt.name, id, err)
				}
			}
		}
		// From v11 on, origin is not protected by redaction, so the spec
		// signature (which covers origin) no longer verifies.
		for _, id := range []string{"11", "12"} {
			if err := VerifyEvent([]byte(tt.want), Version(id), "domain", k.ID, k.Public()); !errors.Is(err, ErrBadSignature) {
				t.Errorf("%s v%s: VerifyEvent = %v, want ErrBadSignature", tt.name, id, err)
			}
		}
	}
}

func TestCheckContentHashFailures(t *testing.T) {
	ver := &RoomV10
	tests := []struct{ name, raw, msg string }{
		{"no hashes", `{"type":"X","content":{}}`, "no hashes"},
		{"no sha256", `{"hashes":{},"content":{}}`, "missing"},
		{"sha256 not string", `{"hashes":{"sha256":1}}`, "missing or not a string"},
		{"not base64", `{"hashes":{"sha256":"***"}}`, "not base64"},
		{"wrong length", `{"hashes":{"sha256":"AAAA"}}`, "not base64"},
		{"mismatch", `{"content":{},"hashes":{"sha256":"5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"}}`, "computed"},
	}
	for _, tt := range tests {
		err := CheckContentHash([]byte(tt.raw), ver)
		if !errors.Is(err, ErrBadHash) || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("%s: got %v, want ErrBadHash mentioning %q", tt.name, err, tt.msg)
		}
	}
	// Padded base64 is accepted ("SHOULD accept input with or without
	// padding").
	padded := strings.Replace(specEventVectors[0].want, "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos", "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos=", 1)
	if err := CheckContentHash([]byte(padded), ver); err != nil {
		t.Errorf("padded hash: %v", err)
	}
}

func TestReferenceHashAndEventID(t *testing.T) {
	ev := []byte(specEventVectors[1].want) // carries event_id "$0:domain"
	for _, id := range []string{"1", "2", "3", "4", "10", "11", "12"} {
		ver := Version(id)
		sum, err := ReferenceHash(ev, ver)
		if err != nil {
			t.Fatal(err)
		}
		red, _ := Redact(ev, ver)
		stripped, _ := appendWithout(nil, red, "signatures", "unsigned")
		if want := sha256.Sum256(stripped); sum != want {
			t.Errorf("v%s: ReferenceHash differs from sha256 of the redacted event without signatures", id)
		}
		eid, err := EventID(ev, ver)
		if err != nil {
			t.Fatal(err)
		}
		var want string
		switch ver.EventIDFormat {
		case 1:
			want = "$0:domain"
		case 3:
			want = "$" + base64.RawStdEncoding.EncodeToString(sum[:])
		default:
			want = "$" + base64.RawURLEncoding.EncodeToString(sum[:])
		}
		if eid != want {
			t.Errorf("v%s: EventID = %s, want %s", id, eid, want)
		}
	}
	// Signatures, unsigned and non-essential content do not change the
	// reference hash; essential keys do.
	base, _ := ReferenceHash(ev, &RoomV10)
	for _, edit := range []struct {
		from, to string
		same     bool
	}{
		{`"age_ts": 1000000`, `"age_ts": 5`, true},
		{`"Wm+VzmOU`, `"Xm+VzmOU`, true},
		{`Here is the message content`, `Something else`, true},
		{`"depth"`, `"depth"`, true},
		{`"origin_server_ts": 1000000`, `"origin_server_ts": 1000001`, false},
		{`"sender": "@u:domain"`, `"sender": "@v:domain"`, false},
		{`"sha256": "onLK`, `"sha256": "XnLK`, false},
	} {
		edited := strings.Replace(string(ev), edit.from, edit.to, 1)
		got, err := ReferenceHash([]byte(edited), &RoomV10)
		if err != nil {
			t.Fatal(err)
		}
		if (got == base) != edit.same {
			t.Errorf("editing %s -> %s: reference hash unchanged = %v, want %v", edit.from, edit.to, got == base, edit.same)
		}
	}
	if _, err := EventID([]byte(`{"type":"X","content":{}}`), &RoomV1); !errors.Is(err, ErrBadEvent) {
		t.Errorf("v1 EventID without event_id: %v", err)
	}
	if got := RoomIDFromCreateEventID("$abc"); got != "!abc" {
		t.Errorf("RoomIDFromCreateEventID = %s", got)
	}
}

func TestNilVersion(t *testing.T) {
	raw := []byte(`{}`)
	if _, err := ContentHash(raw, nil); err == nil {
		t.Error("ContentHash")
	}
	if _, err := AddContentHash(raw, nil); err == nil {
		t.Error("AddContentHash")
	}
	if err := CheckContentHash(raw, nil); err == nil {
		t.Error("CheckContentHash")
	}
	if _, err := ReferenceHash(raw, nil); err == nil {
		t.Error("ReferenceHash")
	}
	if _, err := EventID(raw, nil); err == nil {
		t.Error("EventID")
	}
	if _, err := Redact(raw, nil); err == nil {
		t.Error("Redact")
	}
	if _, err := ParseEvent(raw, nil); err == nil {
		t.Error("ParseEvent")
	}
	if _, err := SignEvent(raw, nil, "a", "ed25519:1", nil); err == nil {
		t.Error("SignEvent")
	}
	if err := VerifyEvent(raw, nil, "a", "ed25519:1", nil); err == nil {
		t.Error("VerifyEvent")
	}
	if _, err := EncodeProto(ProtoEvent{}, nil, "a"); err == nil {
		t.Error("EncodeProto")
	}
}
