package rooms

import (
	"crypto/rand"
	"encoding/base64"
)

// newRoomID makes an opaque room ID for versions whose room ID does not derive
// from the create event.
func (s *Sequencer) newRoomID() string {
	var b [18]byte
	rand.Read(b[:])
	return "!" + base64.RawURLEncoding.EncodeToString(b[:]) + ":" + s.cfg.ServerName
}
