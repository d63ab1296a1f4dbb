package dag

import "crypto/ed25519"

// Prepare builds p like Build but does not sign it: the event carries an
// empty signatures object. Its ID, hashes and every field are already final,
// because neither the content hash nor the reference hash (the event ID of
// v3+) covers signatures. Sign completes it.
//
// This lets a sequencer choose prev_events and run the auth rules under its
// per-room lock and do the ed25519 signature, the expensive part, outside it.
func Prepare(p ProtoEvent, ver *RoomVersion, origin string) (*Event, error) {
	// The intermediate encodings go in pooled scratch buffers and the
	// event's bytes in one allocation of their final size: growing them
	// from nil was most of Prepare's allocations.
	buf := getBuf()
	defer putBuf(buf)
	proto, err := encodeProto((*buf)[:0], &p, ver, origin)
	*buf = proto
	if err != nil {
		return nil, err
	}
	buf2 := getBuf()
	defer putBuf(buf2)
	hashed, err := addContentHashCanonical((*buf2)[:0], proto)
	*buf2 = hashed
	if err != nil {
		return nil, err
	}
	raw, err := setMember(make([]byte, 0, len(hashed)+len(`,"signatures":{}`)), hashed, "signatures", []byte("{}"))
	if err != nil {
		return nil, err
	}
	ev := &Event{Version: ver, Raw: raw}
	if err := fillEvent(ev, raw, ver); err != nil {
		return nil, err
	}
	return ev, nil
}

// Sign adds origin's signature to a prepared event, replacing ev.Raw with the
// signed canonical JSON. The other fields are unchanged.
func (ev *Event) Sign(origin, keyID string, key ed25519.PrivateKey) error {
	if err := checkSigningKey(keyID, key); err != nil {
		return err
	}
	signed, err := signEventCanonical(ev.Raw, ev.Version, origin, keyID, key)
	if err != nil {
		return err
	}
	ev.Raw = signed
	return nil
}
