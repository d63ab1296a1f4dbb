package projections

// UserData holds per-user client data that must survive restarts:
//
//	'f' ‖ str(userID) ‖ filterID -> filter JSON
type UserData struct{}

func (UserData) ID() byte     { return 'u' }
func (UserData) Name() string { return "userdata" }

func filterKey(user, id string) []byte { return append(appendStr([]byte{'f'}, user), id...) }

func (UserData) Apply(tx *Tx, _ uint64, v any) error {
	if r, ok := v.(*FilterRecord); ok {
		return tx.Set(filterKey(r.UserID, r.FilterID), r.JSON)
	}
	return nil
}

// Filter returns a user's stored filter JSON.
func (s *Store) Filter(user, id string) ([]byte, error) {
	v, ok, err := s.get(row('u', filterKey(user, id)))
	if err != nil || !ok {
		return nil, orNotFound(err)
	}
	return v, nil
}
