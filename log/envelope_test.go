package log

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/envelope_v*.golden from the current encoder")

// goldenV1 are the records of testdata/envelope_v1.golden.
var goldenV1 = []Record{
	{Kind: 0, Version: 0, Body: nil},
	{Kind: 1, Version: 1, Body: []byte("hello")},
	{Kind: 7, Version: 3, Body: []byte(`{"type":"m.room.message","content":{"body":"hi"}}`)},
	{Kind: 255, Version: 255, Body: []byte{0x00, 0x01, 0x02, 0xfe, 0xff}},
	{Kind: 0x42, Version: 2, Body: []byte{0x82, 0xa1, 'k', 0x01, 0xa1, 'v', 0xc4, 0x02, 0xde, 0xad}}, // msgpack
}

// TestEnvelopeGolden pins the bytes of format 1. A file per format stays in
// testdata forever: decoding it must keep working after new formats exist.
// Only the current format's file is also checked against the encoder.
func TestEnvelopeGolden(t *testing.T) {
	path := filepath.Join("testdata", "envelope_v1.golden")
	if *update {
		var buf bytes.Buffer
		buf.WriteString("# log envelope format 1: <seq> <key hex> <kind> <version> <value hex>\n")
		for i, rec := range goldenV1 {
			seq := uint64(i) + 1
			if i == len(goldenV1)-1 {
				seq = 1<<64 - 1
			}
			fmt.Fprintf(&buf, "%d %x %d %d %x\n", seq, appendKey(nil, seq), rec.Kind, rec.Version, appendEnvelope(nil, rec))
		}
		if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	n := 0
	for line := 1; sc.Scan(); line++ {
		text := sc.Text()
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		fields := strings.Fields(text)
		if len(fields) != 5 {
			t.Fatalf("line %d: %d fields", line, len(fields))
		}
		seq, err1 := strconv.ParseUint(fields[0], 10, 64)
		key, err2 := hex.DecodeString(fields[1])
		kind, err3 := strconv.ParseUint(fields[2], 10, 8)
		version, err4 := strconv.ParseUint(fields[3], 10, 8)
		value, err5 := hex.DecodeString(fields[4])
		if err := errors.Join(err1, err2, err3, err4, err5); err != nil {
			t.Fatalf("line %d: %v", line, err)
		}
		gotSeq, err := decodeKey(key)
		if err != nil || gotSeq != seq {
			t.Errorf("line %d: decodeKey(%x) = %d, %v; want %d", line, key, gotSeq, err, seq)
		}
		rec, err := decodeEnvelope(value)
		if err != nil {
			t.Fatalf("line %d: decodeEnvelope: %v", line, err)
		}
		if rec.Kind != Kind(kind) || rec.Version != uint8(version) {
			t.Errorf("line %d: kind %d version %d, want %d %d", line, rec.Kind, rec.Version, kind, version)
		}
		if n >= len(goldenV1) || !bytes.Equal(rec.Body, goldenV1[n].Body) {
			t.Errorf("line %d: body %x", line, rec.Body)
		}
		// Format 1 is current: the encoder must still produce these bytes.
		if enc := appendEnvelope(nil, rec); !bytes.Equal(enc, value) {
			t.Errorf("line %d: encoder gives %x, golden %x", line, enc, value)
		}
		if k := appendKey(nil, seq); !bytes.Equal(k, key) {
			t.Errorf("line %d: appendKey gives %x, golden %x", line, k, key)
		}
		n++
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if n != len(goldenV1) {
		t.Fatalf("%d golden records, want %d", n, len(goldenV1))
	}
}

func TestDecodeEnvelopeErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		value []byte
	}{
		{"empty", nil},
		{"v1-format-byte-only", []byte{1}},
		{"v1-no-version", []byte{1, 5}},
		{"format-0", []byte{0, 1, 1, 'x'}},
		{"format-2", []byte{2, 1, 1, 'x'}},
		{"format-255", []byte{255}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := decodeEnvelope(tc.value); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("decodeEnvelope(%x): %v, want ErrCorrupt", tc.value, err)
			}
		})
	}
	for _, key := range [][]byte{nil, {'l'}, []byte("l1234567"), []byte("m12345678"), []byte("l123456789")} {
		if _, err := decodeKey(key); !errors.Is(err, ErrCorrupt) {
			t.Errorf("decodeKey(%x): %v, want ErrCorrupt", key, err)
		}
	}
}

// TestPutMatchesAppend checks that the in-place encoders used by the
// committer write the same bytes as the append-style ones.
func TestPutMatchesAppend(t *testing.T) {
	for i, rec := range goldenV1 {
		seq := uint64(i)*0x0102030405 + 1
		key := make([]byte, keyLen)
		putKey(key, seq)
		if !bytes.Equal(key, appendKey(nil, seq)) {
			t.Errorf("putKey(%d) = %x", seq, key)
		}
		val := make([]byte, envelopeLen(&rec))
		putEnvelope(val, &rec)
		if !bytes.Equal(val, appendEnvelope(nil, rec)) {
			t.Errorf("putEnvelope(%+v) = %x", rec, val)
		}
	}
}

// FuzzDecodeEnvelope: arbitrary stored bytes never panic, and whatever
// decodes re-encodes to the same bytes.
func FuzzDecodeEnvelope(f *testing.F) {
	for _, rec := range goldenV1 {
		f.Add(appendEnvelope(nil, rec))
	}
	f.Add([]byte{})
	f.Add([]byte{1})
	f.Add([]byte{2, 0, 0})
	f.Fuzz(func(t *testing.T, value []byte) {
		rec, err := decodeEnvelope(value)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v is not ErrCorrupt", err)
			}
			return
		}
		if enc := appendEnvelope(nil, rec); !bytes.Equal(enc, value) {
			t.Fatalf("decode(%x) re-encodes to %x", value, enc)
		}
	})
}
