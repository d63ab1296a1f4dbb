package api

import (
	"errors"

	"engram/projections"
)

// Synapse's admin API for users, the part operators need to close an
// account: POST /_synapse/admin/v1/deactivate/{userId} {"erase": bool}.

func (s *Server) adminUserRoutes() {
	s.rt.handle("POST", "/_synapse/admin/v1/deactivate/{userId}", authed, s.adminDeactivate)
}

func (s *Server) adminDeactivate(r *Req) error {
	if e := s.requireAdmin(r); e != nil {
		return e
	}
	user := r.Param("userId")
	if !s.accounts.isLocal(user) {
		return merr(400, "M_UNKNOWN", "Can only deactivate local users")
	}
	if _, err := s.store.Account(user); errors.Is(err, projections.ErrNotFound) {
		return errNotFound("User not found")
	} else if err != nil {
		return err
	}
	var b struct {
		Erase bool `json:"erase"`
	}
	if e := r.decode(&b); e != nil {
		return e
	}
	if err := s.deactivateUser(user, b.Erase); err != nil {
		return err
	}
	return r.json(map[string]string{"id_server_unbind_result": "no-support"})
}
