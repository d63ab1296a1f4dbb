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
	`{"next_batch":"n"`,
	`{"next_batch":"n"} x`,
	`[]`,
	``,
}

// TestSyncAnswerDecode: the scanner reads every answer exactly as
// encoding/json does.
func TestSyncAnswerDecode(t *testing.T) {
	for i, in := range syncAnswerSeeds {
		t.Run(fmt.Sprint(i), func(t *testing.T) { checkSyncAnswer(t, []byte(in)) })
	}
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
}

func FuzzSyncAnswer(f *testing.F) {
	for _, s := range syncAnswerSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) { checkSyncAnswer(t, data) })
}

// BenchmarkSyncAnswerDecode: a listener's read of a /sync answer holding 50
// messages, with the scanner and with encoding/json.
func BenchmarkSyncAnswerDecode(b *testing.B) {
	var evs []string
	for i := 0; i < 50; i++ {
		evs = append(evs, fmt.Sprintf(`{"content":{"body":"bench abcdef %d","msgtype":"m.text"},"event_id":"$%040d","origin_server_ts":1763772000000,"room_id":"!room:localhost","sender":"@u%03d:localhost","type":"m.room.message","unsigned":{"age":12}}`, i, i, i))
	}
	data := []byte(`{"next_batch":"s100_200","rooms":{"join":{"!room:localhost":{"timeline":{"events":[` + strings.Join(evs, ",") +
		`],"limited":false,"prev_batch":"t99"},"state":{"events":[]},"ephemeral":{"events":[]},"account_data":{"events":[]},"unread_notifications":{"highlight_count":0,"notification_count":0}}},"invite":{},"leave":{},"knock":{}},"presence":{"events":[]},"account_data":{"events":[]}}`)
	b.Run("scanner", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(data)))
		for i := 0; i < b.N; i++ {
			var a syncAnswer
			if err := a.decodeJSON(data); err != nil || len(a.Rooms.Join["!room:localhost"].Timeline.Events) != 50 {
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
