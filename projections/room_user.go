package projections

import (
	"encoding/binary"

	"engram/log"
)

// Record kinds of per-user room actions.
const (
	KindForget log.Kind = 22 // a user forgot a room they had left
	KindReport log.Kind = 23 // a user reported an event, a room or a user
)

// ForgetRecord is the body of KindForget, version 1.
type ForgetRecord struct {
	UserID string `msgpack:"u"`
	RoomID string `msgpack:"r"`
}

// ReportRecord is the body of KindReport, version 1: what was reported
// (an event of a room, a room, or a user), by whom, why, and when.
type ReportRecord struct {
	Reporter string `msgpack:"by"`
	RoomID   string `msgpack:"r,omitempty"`
	EventID  string `msgpack:"e,omitempty"`
	UserID   string `msgpack:"u,omitempty"`
	Reason   string `msgpack:"why,omitempty"`
	Score    *int   `msgpack:"s,omitempty"`
	TS       int64  `msgpack:"ts"`
}

// RoomUser holds users' own marks on rooms and their reports:
//
//	'f' ‖ str(userID) ‖ roomID -> ∅   (forgotten; cleared when the user is joined, invited or knocks again)
//	'r' ‖ seq u64              -> ∅   (a report, read back from the log)
type RoomUser struct{}

func (RoomUser) ID() byte     { return 'o' }
func (RoomUser) Name() string { return "room_user" }

func forgotKey(user, room string) []byte { return append(appendStr([]byte{'f'}, user), room...) }
func reportKey(seq uint64) []byte        { return appendU64([]byte{'r'}, seq) }

func (RoomUser) Apply(tx *Tx, seq uint64, v any) error {
	switch r := v.(type) {
	case *ForgetRecord:
		return tx.Set(forgotKey(r.UserID, r.RoomID), nil)
	case *ReportRecord:
		return tx.Set(reportKey(seq), nil)
	case *EventRecord:
		for _, c := range stateChanges(r) {
			if c.Type != "m.room.member" {
				continue
			}
			switch MembershipCode(c.Membership) {
			case MemberJoin, MemberInvite, MemberKnock:
				if err := tx.Delete(forgotKey(c.StateKey, r.RoomID)); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func init() {
	registerKind(KindForget, func() any { return new(ForgetRecord) })
	registerKind(KindReport, func() any { return new(ReportRecord) })
	register(RoomUser{})
}

// Forgotten reports whether a user forgot a room (and has not come back).
func (s *Store) Forgotten(user, room string) (bool, error) {
	_, ok, err := s.get(row('o', forgotKey(user, room)))
	return ok, err
}

// Reports calls fn for each report after log position after, oldest first,
// until fn returns false.
func (s *Store) Reports(after uint64, fn func(seq uint64, r *ReportRecord) bool) error {
	var seqs []uint64
	if err := s.scan('o', reportKey(after+1), []byte{'s'}, false, func(k, _ []byte) bool {
		if len(k) == 9 {
			seqs = append(seqs, binary.BigEndian.Uint64(k[1:]))
		}
		return true
	}); err != nil {
		return err
	}
	for _, q := range seqs {
		rec, err := s.log.Get(q)
		if err != nil {
			return err
		}
		v, err := Decode(rec)
		if err != nil {
			return err
		}
		if r, ok := v.(*ReportRecord); ok && !fn(q, r) {
			return nil
		}
	}
	return nil
}
