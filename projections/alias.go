package projections

import (
	"engram/log"
)

// KindAlias is a local room alias created, moved or deleted.
const KindAlias log.Kind = 20

// AliasRecord is the body of KindAlias, version 1. An empty RoomID deletes
// the alias; otherwise the alias now maps to RoomID (created by Creator, the
// user allowed to delete it besides room moderators and admins).
type AliasRecord struct {
	Alias   string `msgpack:"a"`
	RoomID  string `msgpack:"r,omitempty"`
	Creator string `msgpack:"c,omitempty"`
}

// Aliases maps this server's room aliases both ways:
//
//	'a' ‖ alias               -> str(roomID) ‖ creator
//	'r' ‖ str(roomID) ‖ alias -> ∅
type Aliases struct{}

func (Aliases) ID() byte     { return 'l' }
func (Aliases) Name() string { return "aliases" }

func aliasKey(alias string) []byte           { return append([]byte{'a'}, alias...) }
func roomAliasKey(room, alias string) []byte { return append(appendStr([]byte{'r'}, room), alias...) }

// NeedsRead: moving or deleting an alias removes its old reverse row.
func (Aliases) NeedsRead(v any) bool {
	_, ok := v.(*AliasRecord)
	return ok
}

func (Aliases) Apply(tx *Tx, _ uint64, v any) error {
	r, ok := v.(*AliasRecord)
	if !ok {
		return nil
	}
	old, found, err := tx.Get(aliasKey(r.Alias))
	if err != nil {
		return err
	}
	if found {
		if room, _, ok := readStr(old); ok {
			if err := tx.Delete(roomAliasKey(room, r.Alias)); err != nil {
				return err
			}
		}
	}
	if r.RoomID == "" {
		return tx.Delete(aliasKey(r.Alias))
	}
	if err := tx.Set(aliasKey(r.Alias), append(appendStr(nil, r.RoomID), r.Creator...)); err != nil {
		return err
	}
	return tx.Set(roomAliasKey(r.RoomID, r.Alias), nil)
}

func init() {
	registerKind(KindAlias, func() any { return new(AliasRecord) })
	register(Aliases{})
}

// Alias returns the room a local alias maps to and who created it.
func (s *Store) Alias(alias string) (room, creator string, err error) {
	v, ok, err := s.get(row('l', aliasKey(alias)))
	if err != nil || !ok {
		return "", "", orNotFound(err)
	}
	room, rest, ok := readStr(v)
	if !ok {
		return "", "", ErrNotFound
	}
	return room, string(rest), nil
}

// RoomAliases lists the local aliases of a room, in order.
func (s *Store) RoomAliases(room string) ([]string, error) {
	prefix := appendStr([]byte{'r'}, room)
	out := []string{}
	err := s.scan('l', prefix, nil, false, func(k, _ []byte) bool {
		out = append(out, string(k[len(prefix):]))
		return true
	})
	return out, err
}
