package projections

import (
	"engram/log"
)

// KindDirectory is a room published to, or withdrawn from, this server's
// published room directory.
const KindDirectory log.Kind = 21

// DirectoryRecord is the body of KindDirectory, version 1.
type DirectoryRecord struct {
	RoomID string `msgpack:"r"`
	Public bool   `msgpack:"p,omitempty"`
	UserID string `msgpack:"u,omitempty"` // who changed it, for the record
}

// Directory is the set of published rooms:
//
//	'p' ‖ roomID -> ∅
type Directory struct{}

func (Directory) ID() byte     { return 'n' }
func (Directory) Name() string { return "directory" }

func publishedKey(room string) []byte { return append([]byte{'p'}, room...) }

func (Directory) Apply(tx *Tx, _ uint64, v any) error {
	r, ok := v.(*DirectoryRecord)
	if !ok {
		return nil
	}
	if r.Public {
		return tx.Set(publishedKey(r.RoomID), nil)
	}
	return tx.Delete(publishedKey(r.RoomID))
}

func init() {
	registerKind(KindDirectory, func() any { return new(DirectoryRecord) })
	register(Directory{})
}

// RoomPublished reports whether a room is in the published room directory.
func (s *Store) RoomPublished(room string) (bool, error) {
	_, ok, err := s.get(row('n', publishedKey(room)))
	return ok, err
}

// PublishedRooms lists the published rooms in room ID order.
func (s *Store) PublishedRooms() ([]string, error) {
	var out []string
	err := s.scan('n', []byte{'p'}, nil, false, func(k, _ []byte) bool {
		out = append(out, string(k[1:]))
		return true
	})
	return out, err
}
