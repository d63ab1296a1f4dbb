package api

import (
	"encoding/base64"
	"encoding/json"
	"hash/fnv"
	"slices"
	"sort"
	"strings"
	"sync"

	"engram/projections"
)

// End-to-end encryption support (spec: "End-to-End Encryption", "Send-to-
// Device messaging", "Server-side key backups"). The server never sees
// plaintext: device keys, one-time keys, cross-signing keys, to-device
// contents and backed-up room keys are stored and relayed as the client sent
// them. Every change is a log record, so nothing is lost on restart and a
// replay rebuilds the same keys, inboxes and backups.
//
// Remote users are answered through federation (api/e2ee_remote.go):
// queryRemoteKeys, claimRemoteKeys and sendRemoteToDevice ask or tell the
// users' servers once SetE2EEFederation installed the outbound client;
// without it (single-server mode) remote servers are reported under
// "failures" and to-device messages to them are dropped.

func (s *Server) e2eeRoutes() {
	rt := &s.rt
	rt.client("POST", "/keys/upload", authed, s.keysUpload)
	rt.client("POST", "/keys/upload/{deviceId}", authed, s.keysUpload)
	rt.client("POST", "/keys/query", authed, s.keysQuery)
	rt.client("POST", "/keys/claim", authed, s.keysClaim)
	rt.client("GET", "/keys/changes", authed, s.keysChanges)
	rt.client("POST", "/keys/device_signing/upload", authed, s.crossSigningUpload)
	rt.client("POST", "/keys/signatures/upload", authed, s.signaturesUpload)
	rt.client("PUT", "/sendToDevice/{eventType}/{txnId}", authed, s.sendToDevice)
	s.backupRoutes()
}

// e2eeState is the in-memory coordination E2EE writes need. Its zero value
// is ready to use.
type e2eeState struct {
	// stripes serialize the writes of one device's keys (uploads against
	// claims) and of one sender's to-device transactions: check, append,
	// unlock, so the check sees every earlier write.
	stripes [64]sync.Mutex
	// users serialize per-user writes (cross-signing, backups).
	users [64]sync.Mutex
	// fedDo makes a signed federation request (nil without federation).
	fedDo fedDoFunc
	// remote caches remote users' keys (api/e2ee_remote.go).
	remote remoteKeyCache
}

func stripeOf(parts ...string) int {
	h := fnv.New32a()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return int(h.Sum32() % 64)
}

// lockDevices locks the stripes of the given (user, device) pairs in order
// (no deadlock between two requests) and returns the unlock function.
func (s *Server) lockDevices(pairs [][2]string) func() {
	idx := make([]int, 0, len(pairs))
	for _, p := range pairs {
		idx = append(idx, stripeOf(p[0], p[1]))
	}
	slices.Sort(idx)
	idx = slices.Compact(idx)
	for _, i := range idx {
		s.e2ee.stripes[i].Lock()
	}
	return func() {
		for j := len(idx) - 1; j >= 0; j-- {
			s.e2ee.stripes[idx[j]].Unlock()
		}
	}
}

func (s *Server) lockUser(user string) func() {
	m := &s.e2ee.users[stripeOf(user)]
	m.Lock()
	return m.Unlock
}

// serverOf returns the server name of a user ID ("" if malformed).
func serverOf(user string) string {
	i := strings.IndexByte(user, ':')
	if !strings.HasPrefix(user, "@") || i < 0 || i == len(user)-1 {
		return ""
	}
	return user[i+1:]
}

// decodeKeyB64 decodes unpadded (or padded) standard base64, as keys are
// written in Matrix.
func decodeKeyB64(s string) ([]byte, bool) {
	b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "="))
	return b, err == nil
}

func init() {
	registerSyncExtension(syncExtension{key: "to_device", changed: syncToDeviceChanged, build: syncToDevice})
	registerSyncExtension(syncExtension{key: "device_lists", changed: syncDeviceListsChanged, build: syncDeviceLists})
	registerSyncExtension(syncExtension{key: "device_one_time_keys_count", build: syncOTKCounts})
	registerSyncExtension(syncExtension{key: "device_unused_fallback_key_types", build: syncFallbackTypes})
}

// syncToDeviceChanged wakes a long-poll when a message reaches the device.
func syncToDeviceChanged(st *syncState, after, upto uint64) (bool, error) {
	found := false
	err := st.s.store.Inbox(st.user, st.device, after, upto, func(uint64, *projections.InboxMsg) bool {
		found = true
		return false
	})
	return found, err
}

// syncToDevice writes the to_device section: the device's messages in
// (since, upto], in the order they were sent. Syncing with a since token
// first acknowledges every message up to it, as Synapse deletes them "up to
// the since token": the client has the response that carried them. All
// pending messages are sent (no limit), because the next since token is a
// log position past all of them.
func syncToDevice(st *syncState, b []byte) ([]byte, bool, error) {
	s := st.s
	if !st.initial {
		if err := s.ackToDevice(st.user, st.device, st.since.log); err != nil {
			return nil, false, err
		}
	}
	since := st.since.log
	if st.initial {
		since = 0
	}
	b = append(b, `{"events":[`...)
	n := 0
	err := s.store.Inbox(st.user, st.device, since, st.upto.log, func(_ uint64, m *projections.InboxMsg) bool {
		if !json.Valid(m.Content) {
			return true // cannot happen: contents were parsed before they were logged
		}
		if n > 0 {
			b = append(b, ',')
		}
		n++
		b = append(b, `{"sender":`...)
		b = appendJSONString(b, m.Sender)
		b = append(b, `,"type":`...)
		b = appendJSONString(b, m.Type)
		b = append(b, `,"content":`...)
		b = append(b, m.Content...)
		b = append(b, '}')
		return true
	})
	if err != nil {
		return nil, false, err
	}
	return append(b, "]}"...), n > 0, nil
}

// syncDeviceListsChanged wakes a long-poll when a device list the user
// tracks changed.
func syncDeviceListsChanged(st *syncState, after, upto uint64) (bool, error) {
	changed, left, err := st.s.deviceListChanges(st.user, after, upto)
	return len(changed) > 0 || len(left) > 0, err
}

// syncDeviceLists writes device_lists; like Synapse, an initial sync has
// none (the client queries every user it needs).
func syncDeviceLists(st *syncState, b []byte) ([]byte, bool, error) {
	var changed, left []string
	if !st.initial {
		var err error
		if changed, left, err = st.s.deviceListChanges(st.user, st.since.log, st.upto.log); err != nil {
			return nil, false, err
		}
	}
	b = append(b, `{"changed":`...)
	b = appendStringList(b, changed)
	b = append(b, `,"left":`...)
	b = appendStringList(b, left)
	return append(b, '}'), len(changed)+len(left) > 0, nil
}

func syncOTKCounts(st *syncState, b []byte) ([]byte, bool, error) {
	counts, err := st.s.otkCounts(st.user, st.device)
	if err != nil {
		return nil, false, err
	}
	cb, err := json.Marshal(counts)
	if err != nil {
		return nil, false, err
	}
	return append(b, cb...), false, nil
}

func syncFallbackTypes(st *syncState, b []byte) ([]byte, bool, error) {
	fks, err := st.s.store.FallbackKeys(st.user, st.device)
	if err != nil {
		return nil, false, err
	}
	var unused []string
	for algo, fk := range fks {
		if !fk.Used {
			unused = append(unused, algo)
		}
	}
	sort.Strings(unused)
	return appendStringList(b, unused), false, nil
}

func appendStringList(b []byte, l []string) []byte {
	b = append(b, '[')
	for i, v := range l {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, v)
	}
	return append(b, ']')
}

// ackToDevice removes a device's to-device messages up to since, through
// the log, when there are any (most syncs append nothing).
func (s *Server) ackToDevice(user, device string, since uint64) error {
	if since == 0 {
		return nil
	}
	pending := false
	if err := s.store.Inbox(user, device, 0, since, func(uint64, *projections.InboxMsg) bool {
		pending = true
		return false
	}); err != nil || !pending {
		return err
	}
	return s.appendRecords(&projections.ToDeviceAckRecord{UserID: user, DeviceID: device, UpTo: since})
}

// otkCounts returns a device's unclaimed one-time key counts; like Synapse,
// signed_curve25519 is always present.
func (s *Server) otkCounts(user, device string) (map[string]int, error) {
	counts, err := s.store.OneTimeKeyCounts(user, device)
	if err != nil {
		return nil, err
	}
	if _, ok := counts["signed_curve25519"]; !ok {
		counts["signed_curve25519"] = 0
	}
	return counts, nil
}

// deviceListChanges computes the device_lists of a sync (and
// /keys/changes) for user over (since, upto]: changed lists the users who
// share a room with user (and user) whose keys changed, or who newly share
// one (they joined a room of user's, or user joined theirs); left lists the
// users with whom user no longer shares any room.
func (s *Server) deviceListChanges(user string, since, upto uint64) (changed, left []string, err error) {
	if upto <= since {
		return nil, nil, nil
	}
	myRooms := map[string]bool{}
	urs, err := s.store.UserRooms(user)
	if err != nil {
		return nil, nil, err
	}
	for _, u := range urs {
		if u.Membership == projections.MemberJoin {
			myRooms[u.RoomID] = true
		}
	}
	shareCache := map[string]bool{user: true}
	var serr error
	shares := func(other string) bool {
		if v, ok := shareCache[other]; ok {
			return v
		}
		ors, err := s.store.UserRooms(other)
		if err != nil {
			serr = err
			return false
		}
		v := false
		for _, o := range ors {
			if o.Membership == projections.MemberJoin && myRooms[o.RoomID] {
				v = true
				break
			}
		}
		shareCache[other] = v
		return v
	}
	cand := map[string]bool{}
	leftCand := map[string]bool{}
	if err := s.store.KeyChanges(since, upto, func(_ uint64, u string) bool {
		cand[u] = true
		return true
	}); err != nil {
		return nil, nil, err
	}
	if err := s.store.PrivateKeyChanges(user, since, upto, func(u string) bool {
		cand[u] = true
		return true
	}); err != nil {
		return nil, nil, err
	}
	// Membership changes in rooms user has (or had) a membership in.
	relevant := map[string]bool{}
	var ferr error
	err = s.store.Changes(since, upto, func(seq uint64, room string) bool {
		rel, ok := relevant[room]
		if !ok {
			m, err := s.store.MemberOf(room, user)
			if err != nil {
				ferr = err
				return false
			}
			rel = m.Membership != 0
			relevant[room] = rel
		}
		if !rel {
			return true
		}
		rec, err := s.store.Record(seq)
		if err != nil {
			ferr = err
			return false
		}
		if rec.Type != "m.room.member" || rec.StateKey == nil {
			return true
		}
		target := *rec.StateKey
		joined := rec.Membership == "join"
		gone := rec.Membership == "leave" || rec.Membership == "ban"
		if target != user {
			if joined {
				cand[target] = true
			} else if gone {
				leftCand[target] = true
			}
			return true
		}
		if !joined && !gone {
			return true
		}
		members, err := s.store.Members(room)
		if err != nil {
			ferr = err
			return false
		}
		for _, m := range members {
			if m.UserID == user || m.Membership != projections.MemberJoin {
				continue
			}
			if joined {
				cand[m.UserID] = true
			} else {
				leftCand[m.UserID] = true
			}
		}
		return true
	})
	if err == nil {
		err = ferr
	}
	if err != nil {
		return nil, nil, err
	}
	for u := range cand {
		if shares(u) {
			changed = append(changed, u)
		}
	}
	for u := range leftCand {
		if !shares(u) && u != user {
			left = append(left, u)
		}
	}
	if serr != nil {
		return nil, nil, serr
	}
	sort.Strings(changed)
	sort.Strings(left)
	return changed, left, nil
}
