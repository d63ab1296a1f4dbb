package api

import "engram/dag"

// Invite permission (spec v1.18): a local user who blocks invites is never
// invited through this server's client API, and their invites are not
// served over /sync. The federation invite endpoint checks the same.

var errInviteBlocked = merr(403, "M_INVITE_BLOCKED", "The user does not accept invites")

// inviteBlocked reports whether target is a local user who blocks invites.
func (s *Server) inviteBlocked(target string) bool {
	return dag.ServerName(target) == s.cfg.ServerName && s.store.InvitesBlocked(target)
}
