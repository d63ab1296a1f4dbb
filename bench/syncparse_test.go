package bench

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// syncAnswerSeeds are /sync answers as servers write them, and the corner
// cases the scanner must hand back to encoding/json.
var syncAnswerSeeds = []string{
	`{"next_batch":"s1_2","rooms":{"join":{"!r:h":{"timeline":{"events":[{"content":{"body":"bench x 1","msgtype":"m.text"},"event_id":"$a","origin_server_ts":12,"room_id":"!r:h","sender":"@u:h","type":"m.room.message","unsigned":{"age":3,"transaction_id":"t"}}],"limited":false,"prev_batch":"p9"},"state":{"events":[{"type":"m.room.member","state_key":"@u:h","content":{"membership":"join"}}]},"ephemeral":{"events":[]},"unread_notifications":{"highlight_count":0,"notification_count":2}}},"invite":{},"leave":{},"knock":{}},"presence":{"events":[]},"account_data":{"events":[]},"to_device":{"events":[]},"device_lists":{"changed":[],"left":[]},"device_one_time_keys_count":{"signed_curve25519":0},"device_unused_fallback_key_types":[]}`,
	`{"rooms":{"join":{"!r:h":{"timeline":{"prev_batch":"p","limited":true,"events":[]}}}},"next_batch":"n"}`,
	` { "next_batch" : "a\"b\\u00e9" , "rooms" : { "join" : { } } } `,
	`{"next_batch":"n","rooms":{"join":{"!r:h":{"timeline":{"events":[{"type":"m.room.message","content":{"body":"caf\u00e9 é","x":[1,2.5e3,-0,{"y":null}]},"state_key":null}]}}}}}`,
	`{"next_batch":"n","rooms":null}`,
	`{"next_batch":"n","rooms":{"join":null}}`,
	`{"next_batch":"n","rooms":{"join":{"!r:h":{"timeline":null,"state":null}}}}`,
	`{"next_batch":"n","rooms":{"join":{"!r:h":{"timeline":{"events":null,"limited":null,"prev_batch":null}}}}}`,
	`{"Next_Batch":"n"}`,
	`{"next_batch":"n","rooms":{"join":{"!r:h":{"timeline":{"events":[{"type":"m.room.message","content":{"body":5}}]}}}}}`,
	`{"next_batch":"n","rooms":{"join":{"!r:h":{"timeline":{"events":[null]}}}}}`,
	`{"next_batch":"n","rooms":{"join":{"!a":{},"!a":{"timeline":{"limited":true}}}}}`,
	`{"next_batch":"n","rooms":{"join":{"!r:h":{"timeline":{"events":[{"type":"a"}],"events":[{"type":"b"}]}}}}}`,
	`{"next_batch":"\xff"}`,
	` {"next_batch" : "n" , "rooms" : { "join" : { "!r:h" : { "timeline" : { "limited" : true , "prev_batch" : "p" , "events" : [ { "type" : "m.room.message" , "content" : { "body" : "bench r 4" } } , null ] } } } } } `,
	`{"next_batch":"n","rooms":{"join":{"!r:h":{"timeline":{"events":[{"Type":"m.room.message","type":"x"}]}}}}}`,
	`{"next_batch":"n","rooms":{"join":{"!r:h":{"timeline":{"events":[{"typ\u0065":"m.room.message"}]}}}}}`,
	`{"next_batch":"n","rooms":{"join":{"!r:h":{"timeline":{"events":[{"type":"m.room.message","type":null}]}}}}}`,
	`{"next_batch":"n","rooms":{"join":{"!r:h":{"timeline":{"events":[{"type":"m.room.message","content":{"body":"bench r 1","body":null}}]}}}}}`,
	`{"next_batch":"n","rooms":{"join":{"!r:h":{"timeline":{"events":[{"type":"m.room.\u006dessage","event_id":"$\/x","content":{"body":"bench r 2 \u00e9"}}]}}}}}`,
	`{"next_batch":"n","rooms":{"join":{"!r:h":{"timeline":{"events":[{"type":"m.room.message","sender":5}]}}}}}`,
	`{"next_batch":"n","rooms":{"join":{"!r:h":{"timeline":{"events":[{"type":"m.room.message","state_key":[]}]}}}}}`,
	`{"next_batch":"n","rooms":{"join":{"!r:h":{"state":[]}}}}`,
	`{"next_batch":"n","rooms":{"join":{"!r:h":{"state":{"events":{}}}}}}`,
	`{"next_batch":"n","rooms":{"join":{"!r:h":{"state":{"events":[1,"x",{"a":[true,false,null]}]}}}}}`,
	`{"next_batch":"n","rooms":{"join":{"!other":{"timeline":5},"!r:h":{}}}}`,
	`{"next_batch":"n","rooms":{"join":{"!r:h":{"timeline":{"limited":"yes"}}}}}`,
	`{"next_batch":"n","rooms":{"join":{"!r:h":{"timeline":{}}},"join":{"!s:h":{}}}}`,
	`{"next_batch":"n","rooms":{"join":{"!r:h":{"timeline":{"events":[{"type":"m.room.message","content":{"body":"bench r 3"}}]},"timeline":{"limited":true}}}}}`,
	`{"next_batch":"a","next_batch":"b"}`,
	`{"next_batch":"n","rooms":{"join":{"!r:h":{"unsigned":{"x":[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]}}}}}`,
	`{"next_batch":"n","rooms":{"join":{"!r:h":{"x":"a\qb"}}}}`,
	`{"next_batch":"n","rooms":{"join":{"!r:h":{"x":"tab\there","y":"\ud83d\ude00"}}}}`,
	`{"next_batch":"n","rooms":{"join":{"!r:h":{"x":01}}}}`,
	`{"next_batch":"n","rooms":{"join":{"!r:h":{"x":-1.5e+3,"y":1E5,"z":-0.0}}}}`,
	`{"next_batch":"n","rooms":{"join":{"!r\u0021:h":{}}}}`,
	`{"event_id":"$e"}`,
	`{"event_id":null,"other":{"a":1}}`,
	`{"EVENT_ID":"$e"}`,
	`{"event_id":5}`,
	`null`,
	`{"next_batch":"n","rooms":{"join":{"!unwatched":{"timeline":{"events":[{"type":"m.room.message"}]}},"!r:h":{"timeline":{"events":[{"type":"a","event_id":"$1"}]}},"!unwatched":{}}}}`,
	`{"next_batch":"n"`,
	`{"next_batch":"n"} x`,
	`[]`,
	``,
}

// TestSyncAnswerDecode: the scanners (decodeJSON, the listeners' view,
// the send-answer check) read every answer exactly as encoding/json does.
func TestSyncAnswerDecode(t *testing.T) {
	for i, in := range syncAnswerSeeds {
		t.Run(fmt.Sprint(i), func(t *testing.T) { checkSyncAnswer(t, []byte(in)) })
	}
	t.Run("busy", func(t *testing.T) { checkSyncAnswer(t, benchSyncAnswer()) })
}

func checkSyncAnswer(t *testing.T, data []byte) {
	var want syncAnswer
	werr := json.Unmarshal(data, &want)
	var got syncAnswer
	gerr := got.decodeJSON(data)
	if (werr == nil) != (gerr == nil) {
		t.Fatalf("%q: error %v, encoding/json %v", data, gerr, werr)
	}
	if werr == nil && !reflect.DeepEqual(got, want) {
		t.Fatalf("%q:\n got %+v\nwant %+v", data, got, want)
	}
	checkSyncView(t, data, &want, werr)
	checkSendAnswerMatches(t, data)
}

// checkSyncView: a listener's view of the answer holds what encoding/json
// reads from it, whether the fast scan or its fallback produced it, and
// the fast scan never accepts what encoding/json rejects.
func checkSyncView(t *testing.T, data []byte, want *syncAnswer, werr error) {
	t.Helper()
	var ids []string
	watch := func(id []byte) int {
		if string(id) == "!unwatched" {
			return -1
		}
		for i, x := range ids {
			if x == string(id) {
				return i
			}
		}
		ids = append(ids, string(id))
		return len(ids) - 1
	}
	var v syncView
	if v.scan(data, watch) && werr != nil {
		t.Fatalf("%q: fast scan accepted, encoding/json: %v", data, werr)
	}
	ids = nil
	err := v.parse(data, watch)
	if (err == nil) != (werr == nil) {
		t.Fatalf("%q: view error %v, encoding/json %v", data, err, werr)
	}
	if err != nil {
		return
	}
	if string(v.nextBatch) != want.NextBatch {
		t.Fatalf("%q: next_batch %q, want %q", data, v.nextBatch, want.NextBatch)
	}
	n := 0
	for id, jr := range want.Rooms.Join {
		if id == "!unwatched" {
			continue
		}
		n++
		var rv *roomView
		var evs []eventView
		for i := range v.rooms {
			if ids[v.rooms[i].room] == id {
				rv, evs = &v.rooms[i], v.roomEvents(i)
			}
		}
		if rv == nil {
			t.Fatalf("%q: room %q missing from view", data, id)
		}
		tl := jr.Timeline
		if rv.limited != tl.Limited || string(rv.prevBatch) != tl.PrevBatch || len(evs) != len(tl.Events) {
			t.Fatalf("%q: room %q: view %+v (%d events), want %+v", data, id, *rv, len(evs), tl)
		}
		for i, ev := range tl.Events {
			g := evs[i]
			if string(g.typ) != ev.Type || string(g.body) != ev.Content.Body || string(g.eventID) != ev.EventID {
				t.Fatalf("%q: room %q event %d: view {%q %q %q}, want %+v", data, id, i, g.typ, g.body, g.eventID, ev)
			}
		}
	}
	if len(v.rooms) != n {
		t.Fatalf("%q: view has %d rooms, want %d", data, len(v.rooms), n)
	}
}

// checkSendAnswerMatches: checkSendAnswer fails exactly where
// encoding/json fails to read a PUT /send answer.
func checkSendAnswerMatches(t *testing.T, data []byte) {
	t.Helper()
	var ans struct {
		EventID string `json:"event_id"`
	}
	werr := json.Unmarshal(data, &ans)
	if err := checkSendAnswer(data); (err == nil) != (werr == nil) {
		t.Fatalf("%q: checkSendAnswer %v, encoding/json %v", data, err, werr)
	}
}

func FuzzSyncAnswer(f *testing.F) {
	for _, s := range syncAnswerSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) { checkSyncAnswer(t, data) })
}

// benchSyncAnswer is a /sync answer holding 50 messages as engram writes
// them.
func benchSyncAnswer() []byte {
	var evs []string
	for i := 0; i < 50; i++ {
		evs = append(evs, fmt.Sprintf(`{"content":{"body":"bench abcdef12 %d","msgtype":"m.text"},"event_id":"$WACZUpHMCY_eMPMWtdD1K5cmnjM88wxF--zaed18R%03d","origin_server_ts":1795316808017,"room_id":"!Zb-BUfzVBnN0qRiehqtz4v42f6jziA6uWIiY0bM29og","sender":"@bench1234abcd_u%d:localhost","type":"m.room.message","unsigned":{"age":27,"transaction_id":"abcdef12-%d"}}`, i, i, i, i))
	}
	return []byte(`{"next_batch":"s100_200","rooms":{"join":{"!Zb-BUfzVBnN0qRiehqtz4v42f6jziA6uWIiY0bM29og":{"timeline":{"events":[` + strings.Join(evs, ",") +
		`],"limited":false,"prev_batch":"t99"},"state":{"events":[]},"ephemeral":{"events":[]},"account_data":{"events":[]},"unread_notifications":{"highlight_count":0,"notification_count":0}}},"invite":{},"leave":{},"knock":{}},"presence":{"events":[]},"account_data":{"events":[]}}`)
}

// BenchmarkSyncView: a listener's read of a /sync answer holding 50
// messages (per delivery: ns/op / 50).
func BenchmarkSyncView(b *testing.B) {
	data := benchSyncAnswer()
	room := []byte("!Zb-BUfzVBnN0qRiehqtz4v42f6jziA6uWIiY0bM29og")
	watch := func(id []byte) int {
		if string(id) == string(room) {
			return 0
		}
		return -1
	}
	var v syncView
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for i := 0; i < b.N; i++ {
		if !v.scan(data, watch) || len(v.rooms) != 1 || len(v.roomEvents(0)) != 50 {
			b.Fatal("scan failed")
		}
	}
}

// BenchmarkSyncAnswerDecode: the same answer read into a syncAnswer, with
// the scanner and with encoding/json.
func BenchmarkSyncAnswerDecode(b *testing.B) {
	data := benchSyncAnswer()
	b.Run("scanner", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(data)))
		for i := 0; i < b.N; i++ {
			var a syncAnswer
			if err := a.decodeJSON(data); err != nil || len(a.Rooms.Join["!Zb-BUfzVBnN0qRiehqtz4v42f6jziA6uWIiY0bM29og"].Timeline.Events) != 50 {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(data)))
		for i := 0; i < b.N; i++ {
			var a syncAnswer
			if err := json.Unmarshal(data, &a); err != nil {
				b.Fatal(err)
			}
		}
	})
}
