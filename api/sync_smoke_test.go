package api

import "testing"

func TestSySmoke(t *testing.T) {
	ts, alice, bob, room := syRoomPair(t, Config{EnableRegistration: true})
	s := ts.sySync(bob, "")
	t.Logf("%s", s.raw)
	ts.syMsg(alice, room, "hello bob")
	s2 := ts.syAfter(bob, s.NextBatch)
	t.Logf("%s", s2.raw)
}
