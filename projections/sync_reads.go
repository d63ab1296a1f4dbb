package projections

// Reads for /sync's shared caches (api/served.go). Serving an event asks
// whether it is redacted and whether it has children to bundle; in most
// rooms no event has either, which one short scan per room tells, so the
// server can skip both point reads for every event of such a room until
// a redaction or a relation appears in it.

// RoomHasRedactions reports whether any event of room has a redaction
// recorded against it (the Redactions view's rows of the room).
func (s *Store) RoomHasRedactions(room string) (bool, error) {
	return s.any('k', appendStr([]byte{'b'}, room))
}

// RoomHasRelations reports whether any event of room has children in the
// relations index (its aggregate rows, kept per parent of the room).
func (s *Store) RoomHasRelations(room string) (bool, error) {
	return s.any('R', appendStr([]byte{'g'}, room))
}

// any reports whether projection id has a row under prefix.
func (s *Store) any(id byte, prefix []byte) (bool, error) {
	found := false
	err := s.scan(id, prefix, nil, false, func(_, _ []byte) bool {
		found = true
		return false
	})
	return found, err
}
