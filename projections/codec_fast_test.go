package projections

import (
	"reflect"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"engram/log"
)

func noPDUs(string) bool { return false }

// eventHeader decodes an EventRecord without its PDU bytes with the msgpack
// decoder: the reference decodeEvent without PDUs is compared with.
type eventHeader struct{ EventRecord }

// DecodeMsgpack implements msgpack.CustomDecoder.
func (h *eventHeader) DecodeMsgpack(dec *msgpack.Decoder) error { return h.decode(dec, true) }

// checkDecodeEvent: decodeEvent agrees with the msgpack decoder
// (EventRecord.DecodeMsgpack, eventHeader without the PDU) on body.
func checkDecodeEvent(t *testing.T, body []byte) {
	t.Helper()
	if hugeCount(body) {
		// The msgpack decoder allocates what a count claims before it
		// reads the items (decodeEvent does not): no reference here.
		decodeEvent(body, allPDUs)
		return
	}
	var want EventRecord
	wantErr := msgpack.Unmarshal(body, &want)
	got, err := decodeEvent(body, allPDUs)
	if (err != nil) != (wantErr != nil) {
		t.Fatalf("%x: decodeEvent error %v, msgpack %v", body, err, wantErr)
	}
	if err == nil && !reflect.DeepEqual(*got, want) {
		t.Fatalf("%x: decodeEvent %+v, msgpack %+v", body, *got, want)
	}
	var wantH eventHeader
	wantErr = msgpack.Unmarshal(body, &wantH)
	got, err = decodeEvent(body, noPDUs)
	if (err != nil) != (wantErr != nil) {
		t.Fatalf("%x: header: decodeEvent error %v, msgpack %v", body, err, wantErr)
	}
	if err == nil && !reflect.DeepEqual(*got, wantH.EventRecord) {
		t.Fatalf("%x: header: decodeEvent %+v, msgpack %+v", body, *got, wantH.EventRecord)
	}
}

// hugeCount reports whether body holds what may be a length or count
// (of a string, bin, ext, array or map) larger than body itself: the
// msgpack decoder allocates what such a header claims before it reads (a
// corrupt record could make it allocate gigabytes; decodeEvent checks
// first).
func hugeCount(body []byte) bool {
	for i, c := range body {
		var w int
		switch c {
		case 0xd9, 0xc4, 0xc7:
			w = 1
		case 0xda, 0xc5, 0xc8, 0xdc, 0xde:
			w = 2
		case 0xdb, 0xc6, 0xc9, 0xdd, 0xdf:
			w = 4
		}
		if w == 0 || i+1+w > len(body) {
			continue
		}
		var n uint64
		for _, b := range body[i+1 : i+1+w] {
			n = n<<8 | uint64(b)
		}
		if n > uint64(len(body)) {
			return true
		}
	}
	return false
}

func eventSeeds(t testing.TB) [][]byte {
	var out [][]byte
	vals := fixture(t, 2)
	vals = append(vals,
		&EventRecord{},
		&EventRecord{RoomID: "!r", EventID: "$e", RoomVersion: "12", Type: "m.room.member", StateKey: sk(""), Sender: "@a:x", Membership: "join",
			Redacts: "$x", PrevEvents: []string{"$a", "$b"}, Depth: -3, Status: SoftFailed, Reason: "why", Txn: "t",
			State: []StateEntry{{Type: "a", StateKey: "b", EventID: "$c", Membership: "leave"}, {}}, PDU: []byte(`{"a":1}`)},
		&EventRecord{StateKey: sk("@a:x"), State: []StateEntry{}, Depth: 1 << 40, PDU: make([]byte, 70000)},
		&EventRecord{StateKey: sk("\x00nil"), Depth: -200, RoomID: string(make([]byte, 300))},
	)
	for _, v := range vals {
		if r, _ := Encode(v); r.Kind == KindEvent {
			out = append(out, r.Body)
		}
	}
	// Extra trailing fields (a newer writer) and other integer and string
	// encodings than ours.
	out = append(out,
		[]byte{0x9f, 0xa1, 'r', 0xc0, 0xc0, 0xa1, 't', 0xc0, 0xd9, 1, 's', 0xc4, 1, 'm', 0xc0, 0x92, 0xa1, 'p', 0xc0,
			0xd3, 0, 0, 0, 0, 0, 0, 1, 0, 0xd0, 0xff, 0xc0, 0xc0, 0x91, 0x95, 0xa1, 't', 0xa1, 'k', 0xa1, 'e', 0xa1, 'm', 0x81, 0x01, 0x02, 0xc4, 0},
		[]byte{0x91, 0xc0},
		[]byte{0xc0},
		[]byte("\x9f\xc0\xa0\xc0\xdb\xdb\xdb\x817\xa0"), // a string claiming 3.6 GB
		[]byte{0xdc, 0, 17, 0xa0, 0xa0, 0xa0, 0xa0, 0xc0, 0xa0, 0xa0, 0xa0, 0x90, 0, 1, 0xa0, 0xa0, 0xc0, 0xc4, 0, 0xd4, 1, 1, 0xc7, 1, 1, 2},
	)
	return out
}

func TestDecodeEventMatchesMsgpack(t *testing.T) {
	for _, body := range eventSeeds(t) {
		checkDecodeEvent(t, body)
		for n := 0; n < len(body) && n < 400; n++ {
			checkDecodeEvent(t, body[:n])
		}
	}
}

func TestDecodeEventAllocs(t *testing.T) {
	rec, _ := Encode(fixture(t, 1)[7])
	n := testing.AllocsPerRun(100, func() { decodeForApply(rec) })
	if n > 4 {
		t.Errorf("decoding a message record allocates %v times", n)
	}
	n = testing.AllocsPerRun(100, func() { decodeForApply(log.Record{Kind: KindEvent, Version: 1, Body: rec.Body[:40]}) })
	t.Logf("error path: %v allocs", n)
}

func FuzzDecodeEvent(f *testing.F) {
	for _, body := range eventSeeds(f) {
		f.Add(body)
	}
	f.Fuzz(func(t *testing.T, body []byte) { checkDecodeEvent(t, body) })
}

func BenchmarkDecodeEvent(b *testing.B) {
	rec, _ := Encode(fixture(b, 1)[7])
	b.ReportAllocs()
	for b.Loop() {
		decodeForApply(rec)
	}
}
