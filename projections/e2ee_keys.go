package projections

import (
	"encoding/binary"

	"github.com/vmihailenco/msgpack/v5"

	"engram/log"
)

// End-to-end encryption kinds (40-49). The server never sees plaintext: it
// stores the JSON objects clients upload byte for byte and hands them back.
const (
	KindKeysUpload    log.Kind = 40 // a device uploaded device keys, one-time keys or fallback keys
	KindKeysClaim     log.Kind = 41 // one-time keys were claimed (removed) or fallback keys used
	KindCrossSigning  log.Kind = 42 // a user uploaded cross-signing keys
	KindKeySignatures log.Kind = 43 // signatures were uploaded for device or cross-signing keys
	KindToDevice      log.Kind = 44 // a to-device message was sent (fanned out to devices)
	KindToDeviceAck   log.Kind = 45 // a device has received its to-device messages up to a position
	KindBackupVersion log.Kind = 46 // a key backup version was created, updated or deleted
	KindBackupKeys    log.Kind = 47 // room keys were stored in or deleted from a backup
	KindRemoteKeys    log.Kind = 48 // a remote user's device list or cross-signing keys changed (federation)
)

// OneTimeKey is one uploaded one-time or fallback key: "algorithm:keyID" and
// the key's JSON (a string or a signed object) as the client sent it.
type OneTimeKey struct {
	Algorithm string `msgpack:"a"`
	KeyID     string `msgpack:"i"`
	JSON      []byte `msgpack:"j"`
}

// KeysUploadRecord is the body of KindKeysUpload, version 1. DeviceKeys is
// set only when the device keys changed (the API drops an identical upload,
// so device list subscribers are not woken for nothing).
type KeysUploadRecord struct {
	UserID       string       `msgpack:"u"`
	DeviceID     string       `msgpack:"d"`
	DeviceKeys   []byte       `msgpack:"k,omitempty"`
	OneTimeKeys  []OneTimeKey `msgpack:"o,omitempty"`
	FallbackKeys []OneTimeKey `msgpack:"f,omitempty"`
}

// ClaimedKey names one claimed key. A one-time key is named by its row
// position (Seq, Idx: the upload that added it); a fallback key is marked
// used, not removed ("the fallback key ... stays until replaced").
type ClaimedKey struct {
	UserID    string `msgpack:"u"`
	DeviceID  string `msgpack:"d"`
	Algorithm string `msgpack:"a"`
	KeyID     string `msgpack:"i"`
	Seq       uint64 `msgpack:"s,omitempty"`
	Idx       uint32 `msgpack:"x,omitempty"`
	Fallback  bool   `msgpack:"f,omitempty"`
}

// KeysClaimRecord is the body of KindKeysClaim, version 1. The claim is a
// logged record so a claimed key can never be handed out twice, even after a
// restart or a replay.
type KeysClaimRecord struct {
	Claims []ClaimedKey `msgpack:"c"`
}

// CrossSigningRecord is the body of KindCrossSigning, version 1: the keys
// that were uploaded (nil ones are unchanged).
type CrossSigningRecord struct {
	UserID      string `msgpack:"u"`
	Master      []byte `msgpack:"m,omitempty"`
	SelfSigning []byte `msgpack:"s,omitempty"`
	UserSigning []byte `msgpack:"k,omitempty"`
}

// KeySignature is one verified signature: signer's key SignerKeyID
// ("ed25519:...") signed TargetUser's key TargetKey (a device ID or a
// cross-signing public key).
type KeySignature struct {
	TargetUser  string `msgpack:"tu"`
	TargetKey   string `msgpack:"tk"`
	SignerUser  string `msgpack:"su"`
	SignerKeyID string `msgpack:"sk"`
	Signature   string `msgpack:"s"`
}

// KeySignaturesRecord is the body of KindKeySignatures, version 1.
type KeySignaturesRecord struct {
	Signatures []KeySignature `msgpack:"s"`
}

// RemoteKeysRecord is the body of KindRemoteKeys, version 1: another
// server told us (m.device_list_update, m.signing_key_update) that one of
// its users' keys changed. The keys themselves are not stored (the client
// API caches them in memory and asks the user's server again); the record
// puts the change in the key change stream, so local users sharing a room
// with that user see it in device_lists.changed and query the keys again.
type RemoteKeysRecord struct {
	UserID string `msgpack:"u"`
}

// Cross-signing key types as stored.
const (
	CrossSigningMaster      = "master"
	CrossSigningSelfSigning = "self_signing"
	CrossSigningUserSigning = "user_signing"
)

// E2EEKeys holds device keys, one-time and fallback keys, cross-signing keys
// and signatures, and the device list change streams /sync and /keys/changes
// read:
//
//	'd' ‖ str(user) ‖ device                              -> device keys JSON
//	'o' ‖ str(user) ‖ str(device) ‖ str(algo) ‖ seq u64 ‖ idx u32 ‖ keyID -> key JSON
//	'f' ‖ str(user) ‖ str(device) ‖ algo                  -> msgpack(FallbackKey)
//	'x' ‖ str(user) ‖ type                                -> cross-signing key JSON
//	's' ‖ str(user) ‖ str(targetKey) ‖ str(signer) ‖ signerKeyID -> signature
//	'c' ‖ seq u64 ‖ user                                  -> nil (user's keys changed)
//	'p' ‖ str(user) ‖ seq u64 ‖ other                     -> nil (user's own view of other's keys changed)
//
// One-time keys are ordered by upload so the oldest is claimed first.
type E2EEKeys struct{}

// FallbackKey is a device's fallback key of one algorithm.
type FallbackKey struct {
	KeyID string `msgpack:"i"`
	JSON  []byte `msgpack:"j"`
	Used  bool   `msgpack:"u,omitempty"`
}

func (E2EEKeys) ID() byte     { return 'K' }
func (E2EEKeys) Name() string { return "e2ee_keys" }

func deviceKeysPrefix(user string) []byte { return appendStr([]byte{'d'}, user) }
func deviceKeysKey(user, device string) []byte {
	return append(deviceKeysPrefix(user), device...)
}
func otkDevicePrefix(user, device string) []byte {
	return appendStr(appendStr([]byte{'o'}, user), device)
}
func otkAlgoPrefix(user, device, algo string) []byte {
	return appendStr(otkDevicePrefix(user, device), algo)
}
func otkKey(user, device, algo string, seq uint64, idx uint32, keyID string) []byte {
	k := appendU64(otkAlgoPrefix(user, device, algo), seq)
	return append(binary.BigEndian.AppendUint32(k, idx), keyID...)
}
func fallbackDevicePrefix(user, device string) []byte {
	return appendStr(appendStr([]byte{'f'}, user), device)
}
func fallbackKey(user, device, algo string) []byte {
	return append(fallbackDevicePrefix(user, device), algo...)
}
func crossSigningKey(user, typ string) []byte { return append(appendStr([]byte{'x'}, user), typ...) }
func sigPrefix(user, target string) []byte {
	return appendStr(appendStr([]byte{'s'}, user), target)
}
func sigKey(user, target, signer, signerKey string) []byte {
	return append(appendStr(sigPrefix(user, target), signer), signerKey...)
}
func keyChangeKey(seq uint64, user string) []byte {
	return append(appendU64([]byte{'c'}, seq), user...)
}
func privChangeKey(user string, seq uint64, other string) []byte {
	return append(appendU64(appendStr([]byte{'p'}, user), seq), other...)
}

// NeedsRead: claims mark fallback keys used, and logouts find the rows of
// the devices they remove.
func (E2EEKeys) NeedsRead(v any) bool {
	switch v.(type) {
	case *KeysClaimRecord, *LogoutRecord, *DeactivateRecord:
		return true
	}
	return false
}

func (E2EEKeys) Apply(tx *Tx, seq uint64, v any) error {
	switch r := v.(type) {
	case *KeysUploadRecord:
		if r.DeviceKeys != nil {
			if err := tx.Set(deviceKeysKey(r.UserID, r.DeviceID), r.DeviceKeys); err != nil {
				return err
			}
			if err := tx.Set(keyChangeKey(seq, r.UserID), nil); err != nil {
				return err
			}
		}
		for i, k := range r.OneTimeKeys {
			if err := tx.Set(otkKey(r.UserID, r.DeviceID, k.Algorithm, seq, uint32(i), k.KeyID), k.JSON); err != nil {
				return err
			}
		}
		for _, k := range r.FallbackKeys {
			if err := setMsgpack(tx, fallbackKey(r.UserID, r.DeviceID, k.Algorithm), &FallbackKey{KeyID: k.KeyID, JSON: k.JSON}); err != nil {
				return err
			}
		}
	case *KeysClaimRecord:
		for _, c := range r.Claims {
			if !c.Fallback {
				if err := tx.Delete(otkKey(c.UserID, c.DeviceID, c.Algorithm, c.Seq, c.Idx, c.KeyID)); err != nil {
					return err
				}
				continue
			}
			k := fallbackKey(c.UserID, c.DeviceID, c.Algorithm)
			old, ok, err := tx.Get(k)
			if err != nil || !ok {
				return err
			}
			var fk FallbackKey
			if msgpack.Unmarshal(old, &fk) != nil || fk.KeyID != c.KeyID || fk.Used {
				continue
			}
			fk.Used = true
			if err := setMsgpack(tx, k, &fk); err != nil {
				return err
			}
		}
	case *CrossSigningRecord:
		for _, p := range []struct {
			typ string
			v   []byte
		}{{CrossSigningMaster, r.Master}, {CrossSigningSelfSigning, r.SelfSigning}, {CrossSigningUserSigning, r.UserSigning}} {
			if p.v != nil {
				if err := tx.Set(crossSigningKey(r.UserID, p.typ), p.v); err != nil {
					return err
				}
			}
		}
		return tx.Set(keyChangeKey(seq, r.UserID), nil)
	case *KeySignaturesRecord:
		for _, s := range r.Signatures {
			if err := tx.Set(sigKey(s.TargetUser, s.TargetKey, s.SignerUser, s.SignerKeyID), []byte(s.Signature)); err != nil {
				return err
			}
			// A signature by the owner (self-signing a device, a device
			// signing the master key) changes what everyone sees; a
			// user-signing signature of someone else is visible only to
			// the signer, so only the signer's devices hear of it.
			if s.SignerUser == s.TargetUser {
				if err := tx.Set(keyChangeKey(seq, s.TargetUser), nil); err != nil {
					return err
				}
			} else if err := tx.Set(privChangeKey(s.SignerUser, seq, s.TargetUser), nil); err != nil {
				return err
			}
		}
	case *RemoteKeysRecord:
		return tx.Set(keyChangeKey(seq, r.UserID), nil)
	case *LoginRecord:
		// A new device (or a re-login) changes the user's device list, as
		// Synapse notifies on device creation; a spurious change only makes
		// clients query again.
		return tx.Set(keyChangeKey(seq, r.UserID), nil)
	case *DeviceNameRecord:
		// The display name is served in unsigned.device_display_name.
		return tx.Set(keyChangeKey(seq, r.UserID), nil)
	case *LogoutRecord:
		return removeDeviceKeys(tx, seq, r.UserID, r.DeviceID, r.All)
	case *DeactivateRecord:
		if err := removeDeviceKeys(tx, seq, r.UserID, "", true); err != nil {
			return err
		}
		for _, typ := range []string{CrossSigningMaster, CrossSigningSelfSigning, CrossSigningUserSigning} {
			if err := tx.Delete(crossSigningKey(r.UserID, typ)); err != nil {
				return err
			}
		}
	}
	return nil
}

// removeDeviceKeys drops the keys of a removed device (or of all the user's
// devices) and notes the change of the user's device list.
func removeDeviceKeys(tx *Tx, seq uint64, user, device string, all bool) error {
	var prefixes [][]byte
	if all {
		prefixes = [][]byte{deviceKeysPrefix(user), appendStr([]byte{'o'}, user), appendStr([]byte{'f'}, user)}
	} else {
		prefixes = [][]byte{deviceKeysKey(user, device), otkDevicePrefix(user, device), fallbackDevicePrefix(user, device)}
	}
	for i, p := range prefixes {
		keys, err := tx.scanKeys(p)
		if err != nil {
			return err
		}
		for _, k := range keys {
			if i == 0 && !all && len(k) != len(p) {
				continue // another device whose ID extends this one's
			}
			if err := tx.Delete(k); err != nil {
				return err
			}
		}
	}
	// Synapse notifies a device list change on every device deletion.
	return tx.Set(keyChangeKey(seq, user), nil)
}

func init() {
	registerKind(KindKeysUpload, func() any { return new(KeysUploadRecord) })
	registerKind(KindKeysClaim, func() any { return new(KeysClaimRecord) })
	registerKind(KindCrossSigning, func() any { return new(CrossSigningRecord) })
	registerKind(KindKeySignatures, func() any { return new(KeySignaturesRecord) })
	registerKind(KindRemoteKeys, func() any { return new(RemoteKeysRecord) })
	register(E2EEKeys{})
}

// DeviceKeys returns the device keys a device uploaded.
func (s *Store) DeviceKeys(user, device string) ([]byte, error) {
	v, ok, err := s.get(row('K', deviceKeysKey(user, device)))
	if err != nil || !ok {
		return nil, orNotFound(err)
	}
	return v, nil
}

// UserDeviceKeys calls fn for each device of a user with keys, by device ID.
func (s *Store) UserDeviceKeys(user string, fn func(device string, keys []byte) bool) error {
	p := deviceKeysPrefix(user)
	return s.scan('K', p, nil, false, func(k, v []byte) bool {
		return fn(string(k[len(p):]), append([]byte(nil), v...))
	})
}

// StoredOTK is one unclaimed one-time key.
type StoredOTK struct {
	Algorithm, KeyID string
	Seq              uint64
	Idx              uint32
	JSON             []byte
}

// OneTimeKeys calls fn for a device's unclaimed one-time keys of algo (all
// algorithms when algo is ""), oldest upload first.
func (s *Store) OneTimeKeys(user, device, algo string, fn func(StoredOTK) bool) error {
	p := otkDevicePrefix(user, device)
	lo := p
	if algo != "" {
		lo = otkAlgoPrefix(user, device, algo)
	}
	return s.scan('K', lo, nil, false, func(k, v []byte) bool {
		a, rest, ok := readStr(k[len(p):])
		if !ok || len(rest) < 12 {
			return true
		}
		return fn(StoredOTK{Algorithm: a, Seq: binary.BigEndian.Uint64(rest), Idx: binary.BigEndian.Uint32(rest[8:]),
			KeyID: string(rest[12:]), JSON: append([]byte(nil), v...)})
	})
}

// OneTimeKeyCounts returns how many unclaimed one-time keys a device has,
// by algorithm.
func (s *Store) OneTimeKeyCounts(user, device string) (map[string]int, error) {
	out := map[string]int{}
	p := otkDevicePrefix(user, device)
	err := s.scan('K', p, nil, false, func(k, _ []byte) bool {
		if a, _, ok := readStr(k[len(p):]); ok {
			out[a]++
		}
		return true
	})
	return out, err
}

// FallbackKeys returns a device's fallback keys by algorithm.
func (s *Store) FallbackKeys(user, device string) (map[string]FallbackKey, error) {
	out := map[string]FallbackKey{}
	p := fallbackDevicePrefix(user, device)
	var derr error
	err := s.scan('K', p, nil, false, func(k, v []byte) bool {
		var fk FallbackKey
		if derr = msgpack.Unmarshal(v, &fk); derr != nil {
			return false
		}
		out[string(k[len(p):])] = fk
		return true
	})
	if err == nil {
		err = derr
	}
	return out, err
}

// CrossSigningKey returns one of a user's cross-signing keys (typ is
// CrossSigningMaster, ...).
func (s *Store) CrossSigningKey(user, typ string) ([]byte, error) {
	v, ok, err := s.get(row('K', crossSigningKey(user, typ)))
	if err != nil || !ok {
		return nil, orNotFound(err)
	}
	return v, nil
}

// KeySignatures calls fn for each stored signature of a user's key (a device
// ID or a cross-signing public key).
func (s *Store) KeySignatures(user, target string, fn func(signer, signerKeyID, sig string) bool) error {
	p := sigPrefix(user, target)
	return s.scan('K', p, nil, false, func(k, v []byte) bool {
		signer, rest, ok := readStr(k[len(p):])
		if !ok {
			return true
		}
		return fn(signer, string(rest), string(v))
	})
}

// KeyChanges calls fn for each user whose keys changed in (after, upto],
// oldest first (a user may come more than once).
func (s *Store) KeyChanges(after, upto uint64, fn func(seq uint64, user string) bool) error {
	lo, hi, ok := seqRange([]byte{'c'}, after, upto)
	if !ok {
		return nil
	}
	return s.scan('K', lo, hi, false, func(k, _ []byte) bool {
		if len(k) < 9 {
			return true
		}
		return fn(binary.BigEndian.Uint64(k[1:9]), string(k[9:]))
	})
}

// PrivateKeyChanges calls fn for each user whose keys changed in (after,
// upto] as only user sees them (user-signing signatures user made).
func (s *Store) PrivateKeyChanges(user string, after, upto uint64, fn func(other string) bool) error {
	p := appendStr([]byte{'p'}, user)
	lo, hi, ok := seqRange(p, after, upto)
	if !ok {
		return nil
	}
	return s.scan('K', lo, hi, false, func(k, _ []byte) bool {
		if len(k) < len(p)+8 {
			return true
		}
		return fn(string(k[len(p)+8:]))
	})
}

// LastKeyChange returns the position of user's latest key change at or
// before upto (0 if none within the maxScan latest changes of all users).
// It scans the change stream backwards: the federation's device list stream
// IDs are these positions, and callers memoize the answer, so the scan
// runs about once per user per process.
func (s *Store) LastKeyChange(user string, upto uint64, maxScan int) (uint64, error) {
	lo, hi, ok := seqRange([]byte{'c'}, 0, upto)
	if !ok {
		return 0, nil
	}
	var found uint64
	n := 0
	err := s.scan('K', lo, hi, true, func(k, _ []byte) bool {
		if len(k) >= 9 && string(k[9:]) == user {
			found = binary.BigEndian.Uint64(k[1:9])
			return false
		}
		n++
		return n < maxScan
	})
	return found, err
}
