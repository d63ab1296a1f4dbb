package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/url"
	"slices"
	"sort"
	"sync"
	"time"

	"engram/log"
	"engram/projections"
)

// End-to-end encryption over federation (spec: server-server-api.md,
// "End-to-End Encryption", "Device Management", "Send-to-device messaging").
//
// Outbound, the client API asks a remote user's server for device keys
// (POST /user/keys/query), claims one-time keys (POST /user/keys/claim),
// resyncs a device list (GET /user/devices/{userId}), and sends
// m.direct_to_device, m.device_list_update and m.signing_key_update EDUs
// through the federation sender. Inbound, the federation package calls the
// Fed* methods below for the same requests and EDUs.
//
// Remote keys are cached in memory (they are the remote server's data, not
// ours to lose): a device list update or signing key update from the user's
// server invalidates or patches the entry, and entries expire after
// remoteKeysTTL in case an update was lost. Each update is also logged
// (projections.RemoteKeysRecord) so local users sharing a room see the user
// in device_lists.changed and query again.
//
// Device list stream IDs of local users are log positions: the position of
// each key change record (the 'c' rows of projections.E2EEKeys). They
// increase, survive restarts, and the previous one (prev_id) is found again
// after a restart with Store.LastKeyChange.
//
// Outbound EDUs go through Federation.SendEDU, whose per-destination queue
// is in memory: a to-device message or device list update not yet
// delivered when the server stops is lost (device list receivers recover
// through the prev_id gap on the next update; a lost to-device message is
// a lost room key until the sender's client shares it again). Making them
// durable needs the federation sender to read them from the log, as it
// does PDUs and receipts.

// fedDoFunc makes a signed federation request and decodes the JSON answer
// into out (federation.Client.Do).
type fedDoFunc func(ctx context.Context, dest, method, path string, body, out any) error

// SetE2EEFederation installs the outbound federation client for end-to-end
// encryption and starts the loop that sends device list updates of local
// users. Call it after SetFederation (EDUs go out through its SendEDU).
func (s *Server) SetE2EEFederation(do func(ctx context.Context, dest, method, path string, body, out any) error) {
	s.e2ee.fedDo = do
	if do == nil || s.hub == nil {
		return
	}
	s.hub.wg.Add(1)
	go s.deviceListLoop()
}

const (
	// remoteKeysTTL bounds how long cached remote keys are used without
	// hearing from their server. A user sharing no room with a local user
	// gets no device list updates sent here, so their keys are kept only
	// briefly (untrackedTTL).
	remoteKeysTTL = 10 * time.Minute
	untrackedTTL  = 30 * time.Second
	// maxRemoteCached bounds the cache; beyond it entries are dropped.
	maxRemoteCached = 20000
	// defaultRemoteTimeout is Synapse's default for remote key queries.
	defaultRemoteTimeout = 10 * time.Second
)

// remoteKeyCache holds remote users' keys and, for local users, the last
// device list stream ID sent.
type remoteKeyCache struct {
	mu    sync.Mutex
	users map[string]*remoteUserKeys
	// gen counts invalidations: an answer fetched while one happened is
	// not cached (it may predate the change).
	gen uint64
	// lastSent is the last stream ID sent per local user.
	lastSent map[string]uint64
}

type remoteUserKeys struct {
	devices     map[string]json.RawMessage
	master      json.RawMessage
	selfSigning json.RawMessage
	// stream is the user's device list stream ID the entry is at, -1 when
	// unknown (the entry came from /user/keys/query).
	stream  int64
	fetched time.Time
	// tracked: the user shared a room with a local user when fetched, so
	// their server sends us their device list updates.
	tracked bool
}

func (c *remoteKeyCache) get(user string) *remoteUserKeys {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.users[user]
	if e == nil {
		return nil
	}
	ttl := remoteKeysTTL
	if !e.tracked {
		ttl = untrackedTTL
	}
	if time.Since(e.fetched) > ttl {
		return nil
	}
	return e
}

func (c *remoteKeyCache) generation() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

// put caches e unless an invalidation happened since generation gen.
func (c *remoteKeyCache) put(user string, e *remoteUserKeys, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen {
		return
	}
	if c.users == nil {
		c.users = map[string]*remoteUserKeys{}
	}
	if len(c.users) >= maxRemoteCached {
		for u := range c.users {
			delete(c.users, u)
			if len(c.users) < maxRemoteCached/2 {
				break
			}
		}
	}
	c.users[user] = e
}

// fill adds a cached user's keys to a query result (devices empty: all).
func (e *remoteUserKeys) fill(res *keysQueryResult, user string, devices []string) {
	dk := map[string]json.RawMessage{}
	for d, k := range e.devices {
		if len(devices) == 0 || slices.Contains(devices, d) {
			dk[d] = k
		}
	}
	res.deviceKeys[user] = dk
	if e.master != nil {
		res.master[user] = e.master
	}
	if e.selfSigning != nil {
		res.selfSigning[user] = e.selfSigning
	}
}

// remoteTimeout turns a request's timeout (ms) into a bound for the remote
// requests it makes.
func remoteTimeout(ms *int64) time.Duration {
	if ms == nil || *ms <= 0 {
		return defaultRemoteTimeout
	}
	return min(time.Duration(*ms)*time.Millisecond, 60*time.Second)
}

// remoteFailure is the failures entry of an unreachable server.
func remoteFailure(err error) map[string]any {
	return map[string]any{"status": 503, "message": "Not ready for retry: " + err.Error()}
}

var errNoFederation = errors.New("federation is not enabled")

// validRemoteDeviceKeys keeps the device keys whose user_id and device_id
// match where they were filed (a server cannot answer for another's users).
func validRemoteDeviceKeys(user string, in map[string]json.RawMessage) map[string]json.RawMessage {
	out := map[string]json.RawMessage{}
	for d, raw := range in {
		var dk deviceKeysBody
		if json.Unmarshal(raw, &dk) != nil || dk.UserID != user || dk.DeviceID != d {
			continue
		}
		out[d] = raw
	}
	return out
}

// queryRemoteKeys answers the remote part of /keys/query: cached users from
// the cache, the others with one POST /user/keys/query per server (all
// devices, so the answer can be cached), servers in parallel.
func (s *Server) queryRemoteKeys(res *keysQueryResult, remote map[string]map[string][]string, timeout time.Duration) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	for srv, users := range remote {
		need := map[string][]string{}
		for user, devs := range users {
			if e := s.e2ee.remote.get(user); e != nil {
				e.fill(res, user, devs)
				continue
			}
			need[user] = []string{}
		}
		if len(need) == 0 {
			continue
		}
		if s.e2ee.fedDo == nil {
			res.failures[srv] = remoteFailure(errNoFederation)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			gen := s.e2ee.remote.generation()
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			var out struct {
				DeviceKeys      map[string]map[string]json.RawMessage `json:"device_keys"`
				MasterKeys      map[string]json.RawMessage            `json:"master_keys"`
				SelfSigningKeys map[string]json.RawMessage            `json:"self_signing_keys"`
			}
			err := s.e2ee.fedDo(ctx, srv, "POST", "/_matrix/federation/v1/user/keys/query", map[string]any{"device_keys": need}, &out)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				s.logger.Debug("remote key query failed", "server", srv, "err", err)
				res.failures[srv] = remoteFailure(err)
				return
			}
			now := time.Now()
			for user := range need {
				e := &remoteUserKeys{devices: validRemoteDeviceKeys(user, out.DeviceKeys[user]), stream: -1, fetched: now,
					tracked: s.sharesRoomWithLocal(user)}
				if v := out.MasterKeys[user]; !isNull(v) {
					e.master = v
				}
				if v := out.SelfSigningKeys[user]; !isNull(v) {
					e.selfSigning = v
				}
				s.e2ee.remote.put(user, e, gen)
				e.fill(res, user, users[user])
			}
		}()
	}
	wg.Wait()
}

// claimRemoteKeys claims remote users' one-time keys from their servers
// (servers in parallel) into result and returns the failures.
func (s *Server) claimRemoteKeys(result map[string]map[string]map[string]json.RawMessage, remote map[string]map[string]map[string]string, timeout time.Duration) map[string]any {
	failures := map[string]any{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for srv, users := range remote {
		if s.e2ee.fedDo == nil {
			failures[srv] = remoteFailure(errNoFederation)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			var out struct {
				OneTimeKeys map[string]map[string]map[string]json.RawMessage `json:"one_time_keys"`
			}
			err := s.e2ee.fedDo(ctx, srv, "POST", "/_matrix/federation/v1/user/keys/claim", map[string]any{"one_time_keys": users}, &out)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				s.logger.Debug("remote key claim failed", "server", srv, "err", err)
				failures[srv] = remoteFailure(err)
				return
			}
			for user, devs := range out.OneTimeKeys {
				if _, asked := users[user]; !asked || len(devs) == 0 {
					continue
				}
				result[user] = devs
			}
		}()
	}
	wg.Wait()
	return failures
}

// sendRemoteToDevice sends a to-device message to another server's users
// as an m.direct_to_device EDU. The message ID is derived from the sending
// device and transaction ID, so a receiver can drop a repeat.

// remoteToDeviceRecord is the log record of the to-device messages of one
// send for the users of server: an m.direct_to_device EDU whose message_id
// derives from the sending device and transaction, so a retried send is
// recognised by the receiver too.
func remoteToDeviceRecord(server, sender, senderDevice, typ, txn string, msgs map[string]map[string]json.RawMessage) (*projections.RemoteToDeviceRecord, error) {
	b, err := json.Marshal(msgs)
	if err != nil {
		return nil, err
	}
	h := sha256.Sum256([]byte(sender + "\x00" + senderDevice + "\x00" + txn))
	return &projections.RemoteToDeviceRecord{Server: server, Sender: sender, SenderDevice: senderDevice,
		Type: typ, MessageID: hex.EncodeToString(h[:16]), Messages: b}, nil
}

// ---- inbound (called by the federation package) ----

// FedKeysQuery answers POST /_matrix/federation/v1/user/keys/query for
// origin: the keys of this server's users (no user-signing keys).
func (s *Server) FedKeysQuery(origin string, body []byte) ([]byte, int) {
	var b struct {
		DeviceKeys map[string][]string `json:"device_keys"`
	}
	if json.Unmarshal(body, &b) != nil {
		return fedErrBody("M_BAD_JSON", "Invalid body"), 400
	}
	res := newKeysQueryResult()
	for user, devices := range b.DeviceKeys {
		if !s.accounts.isLocal(user) {
			continue
		}
		if err := s.localKeys(res, user, devices, ""); err != nil {
			s.logger.Error("federation key query", "err", err)
			return fedErrBody("M_UNKNOWN", "Internal error"), 500
		}
	}
	return mustJSON(map[string]any{"device_keys": res.deviceKeys, "master_keys": res.master,
		"self_signing_keys": res.selfSigning}), 200
}

// FedKeysClaim answers POST /_matrix/federation/v1/user/keys/claim.
func (s *Server) FedKeysClaim(origin string, body []byte) ([]byte, int) {
	var b struct {
		OneTimeKeys map[string]map[string]string `json:"one_time_keys"`
	}
	if json.Unmarshal(body, &b) != nil {
		return fedErrBody("M_BAD_JSON", "Invalid body"), 400
	}
	local := map[string]map[string]string{}
	for user, devs := range b.OneTimeKeys {
		if s.accounts.isLocal(user) {
			local[user] = devs
		}
	}
	result, err := s.claimLocalKeys(local)
	if err != nil {
		s.logger.Error("federation key claim", "err", err)
		return fedErrBody("M_UNKNOWN", "Internal error"), 500
	}
	return mustJSON(map[string]any{"one_time_keys": result}), 200
}

// FedUserDevices answers GET /_matrix/federation/v1/user/devices/{userId}:
// the user's devices with their keys, display names and the stream ID the
// list is at, and the user's master and self-signing keys.
func (s *Server) FedUserDevices(origin, user string) ([]byte, int) {
	if !s.accounts.isLocal(user) {
		return fedErrBody("M_INVALID_PARAM", "Not a user of this server"), 400
	}
	keys, err := s.localDeviceKeys(user, nil)
	if err != nil {
		return fedErrBody("M_UNKNOWN", "Internal error"), 500
	}
	devs, err := s.store.Devices(user)
	if err != nil {
		return fedErrBody("M_UNKNOWN", "Internal error"), 500
	}
	list := []map[string]any{}
	for _, d := range devs {
		m := map[string]any{"device_id": d.DeviceID}
		if d.DisplayName != "" {
			m["device_display_name"] = d.DisplayName
		}
		if k, ok := keys[d.DeviceID]; ok {
			m["keys"] = k
		}
		list = append(list, m)
	}
	stream, err := s.deviceListStream(user)
	if err != nil {
		return fedErrBody("M_UNKNOWN", "Internal error"), 500
	}
	out := map[string]any{"user_id": user, "stream_id": stream, "devices": list}
	if k, err := s.localCrossSigningKey(user, projections.CrossSigningMaster, ""); err == nil {
		out["master_key"] = k
	}
	if k, err := s.localCrossSigningKey(user, projections.CrossSigningSelfSigning, ""); err == nil {
		out["self_signing_key"] = k
	}
	return mustJSON(out), 200
}

func fedErrBody(code, msg string) []byte {
	return mustJSON(map[string]string{"errcode": code, "error": msg})
}

// FedToDevice takes an m.direct_to_device EDU: the messages for this
// server's users go to their devices' inboxes ('*' expanded now), once per
// message_id.
func (s *Server) FedToDevice(origin string, content json.RawMessage) {
	var c struct {
		Sender    string                                `json:"sender"`
		Type      string                                `json:"type"`
		MessageID string                                `json:"message_id"`
		Messages  map[string]map[string]json.RawMessage `json:"messages"`
	}
	if json.Unmarshal(content, &c) != nil || c.Type == "" || serverOf(c.Sender) != origin {
		return
	}
	txn := ""
	if c.MessageID != "" {
		txn = "fed:" + c.MessageID
	}
	unlock := s.lockDevices([][2]string{{"txn\x00" + c.Sender, ""}})
	defer unlock()
	if txn != "" {
		if _, err := s.store.ToDeviceTxn(c.Sender, "", txn); err == nil {
			return // a repeat
		}
	}
	rec := &projections.ToDeviceRecord{Sender: c.Sender, Type: c.Type, TxnID: txn}
	users := make([]string, 0, len(c.Messages))
	for u := range c.Messages {
		if s.accounts.isLocal(u) {
			users = append(users, u)
		}
	}
	sort.Strings(users)
	for _, u := range users {
		for _, d := range c.Messages[u] {
			if d = bytes.TrimSpace(d); len(d) == 0 || d[0] != '{' || len(d) > maxToDeviceContent {
				return
			}
		}
		msgs, err := s.toDeviceTargets(u, c.Messages[u])
		if err != nil {
			s.logger.Warn("inbound to-device", "err", err)
			return
		}
		rec.Msgs = append(rec.Msgs, msgs...)
	}
	if len(rec.Msgs) == 0 {
		return
	}
	if err := s.appendRecords(rec); err != nil {
		s.logger.Warn("inbound to-device not stored", "origin", origin, "err", err)
	}
}

// deviceListUpdate is the content of an m.device_list_update EDU.
type deviceListUpdate struct {
	UserID      string          `json:"user_id"`
	DeviceID    string          `json:"device_id"`
	DisplayName string          `json:"device_display_name,omitempty"`
	StreamID    int64           `json:"stream_id"`
	PrevID      []int64         `json:"prev_id"`
	Deleted     bool            `json:"deleted,omitempty"`
	Keys        json.RawMessage `json:"keys,omitempty"`
}

// FedDeviceListUpdate takes an m.device_list_update EDU. A cached list at
// one of prev_id (or at this stream ID: another device of the same change)
// is patched; an older update is dropped; otherwise a gap was found and the
// list is resynced with GET /user/devices. Local users sharing a room with
// the user hear of the change through device_lists.changed.
func (s *Server) FedDeviceListUpdate(origin string, content json.RawMessage) {
	var u deviceListUpdate
	if json.Unmarshal(content, &u) != nil || serverOf(u.UserID) != origin {
		return
	}
	c := &s.e2ee.remote
	c.mu.Lock()
	e := c.users[u.UserID]
	resync := false
	switch {
	case e == nil:
		// Nothing cached: the next query asks the server.
	case u.DeviceID != "" && e.stream >= 0 && (u.StreamID == e.stream || slices.Contains(u.PrevID, e.stream)):
		if u.Deleted {
			delete(e.devices, u.DeviceID)
		} else if !isNull(u.Keys) {
			if len(validRemoteDeviceKeys(u.UserID, map[string]json.RawMessage{u.DeviceID: u.Keys})) == 1 {
				e.devices[u.DeviceID] = u.Keys
			} else {
				delete(c.users, u.UserID)
			}
		}
		e.stream = u.StreamID
	case e.stream >= 0 && u.StreamID < e.stream:
		c.mu.Unlock()
		return // older than what we have
	default:
		delete(c.users, u.UserID)
		c.gen++
		resync = true
	}
	c.mu.Unlock()
	if resync && s.e2ee.fedDo != nil && s.hub != nil && !s.stopping() {
		s.hub.wg.Add(1)
		go func() {
			defer s.hub.wg.Done()
			s.resyncDeviceList(origin, u.UserID)
		}()
	}
	s.noteRemoteKeyChange(u.UserID)
}

// stopping reports whether the server is shutting down (no new background
// work then: Shutdown waits for the hub's goroutines).
func (s *Server) stopping() bool {
	select {
	case <-s.hub.stop:
		return true
	default:
		return false
	}
}

// FedSigningKeyUpdate takes an m.signing_key_update EDU.
func (s *Server) FedSigningKeyUpdate(origin string, content json.RawMessage) {
	var u struct {
		UserID      string          `json:"user_id"`
		Master      json.RawMessage `json:"master_key"`
		SelfSigning json.RawMessage `json:"self_signing_key"`
	}
	if json.Unmarshal(content, &u) != nil || serverOf(u.UserID) != origin {
		return
	}
	c := &s.e2ee.remote
	c.mu.Lock()
	if e := c.users[u.UserID]; e != nil {
		if !isNull(u.Master) {
			e.master = u.Master
		}
		if !isNull(u.SelfSigning) {
			e.selfSigning = u.SelfSigning
		}
	}
	c.mu.Unlock()
	s.noteRemoteKeyChange(u.UserID)
}

// resyncDeviceList refetches a remote user's device list with
// GET /user/devices/{userId} and caches it at the answer's stream ID.
func (s *Server) resyncDeviceList(server, user string) {
	gen := s.e2ee.remote.generation()
	ctx, cancel := context.WithTimeout(context.Background(), defaultRemoteTimeout)
	defer cancel()
	var out struct {
		UserID   string `json:"user_id"`
		StreamID int64  `json:"stream_id"`
		Devices  []struct {
			DeviceID string          `json:"device_id"`
			Keys     json.RawMessage `json:"keys"`
		} `json:"devices"`
		Master      json.RawMessage `json:"master_key"`
		SelfSigning json.RawMessage `json:"self_signing_key"`
	}
	if err := s.e2ee.fedDo(ctx, server, "GET", "/_matrix/federation/v1/user/devices/"+url.PathEscape(user), nil, &out); err != nil {
		s.logger.Debug("device list resync failed", "user", user, "err", err)
		return
	}
	if out.UserID != user {
		return
	}
	raw := map[string]json.RawMessage{}
	for _, d := range out.Devices {
		if !isNull(d.Keys) {
			raw[d.DeviceID] = d.Keys
		}
	}
	e := &remoteUserKeys{devices: validRemoteDeviceKeys(user, raw), stream: out.StreamID, fetched: time.Now(),
		tracked: s.sharesRoomWithLocal(user)}
	if !isNull(out.Master) {
		e.master = out.Master
	}
	if !isNull(out.SelfSigning) {
		e.selfSigning = out.SelfSigning
	}
	s.e2ee.remote.put(user, e, gen)
}

// noteRemoteKeyChange logs a remote user's key change when a local user
// shares a room with them (nobody else would be told).
func (s *Server) noteRemoteKeyChange(user string) {
	if !s.sharesRoomWithLocal(user) {
		return
	}
	if err := s.appendRecords(&projections.RemoteKeysRecord{UserID: user}); err != nil {
		s.logger.Warn("remote key change not stored", "user", user, "err", err)
	}
}

func (s *Server) sharesRoomWithLocal(user string) bool {
	urs, err := s.store.UserRooms(user)
	if err != nil {
		return false
	}
	for _, ur := range urs {
		if ur.Membership != projections.MemberJoin {
			continue
		}
		ms, err := s.store.Members(ur.RoomID)
		if err != nil {
			continue
		}
		for _, m := range ms {
			if m.Membership == projections.MemberJoin && s.accounts.isLocal(m.UserID) {
				return true
			}
		}
	}
	return false
}

// ---- outbound device list updates ----

// deviceListStream returns the stream ID a local user's device list is at:
// the position of their latest key change.
func (s *Server) deviceListStream(user string) (uint64, error) {
	c := &s.e2ee.remote
	c.mu.Lock()
	v, ok := c.lastSent[user]
	c.mu.Unlock()
	if ok {
		return v, nil
	}
	return s.store.LastKeyChange(user, s.log.Last(), maxStreamScan)
}

// maxStreamScan bounds the backward scan for a user's previous stream ID;
// past it the update goes out with no prev_id, and a receiver holding a
// list of the user resyncs it.
const maxStreamScan = 100000

// deviceListLoop follows the log and sends an m.device_list_update (or
// m.signing_key_update) EDU for each change of a local user's devices or
// keys to the servers sharing a room with the user. It starts at the end
// of the log: changes made while federation was down reach other servers
// through the prev_id gap they detect on the next update.
func (s *Server) deviceListLoop() {
	defer s.hub.wg.Done()
	pos := s.log.Last()
	for {
		ch := s.log.Changed()
		if last := s.log.Last(); last > pos {
			err := s.log.Read(pos+1, func(seq uint64, rec log.Record) error {
				if seq > last {
					return errStopRead
				}
				s.deviceListRecord(seq, rec)
				pos = seq
				return nil
			})
			if err != nil && !errors.Is(err, errStopRead) {
				s.logger.Warn("device list updates: reading the log", "err", err)
			}
			pos = max(pos, last)
		}
		select {
		case <-s.hub.stop:
			return
		case <-ch:
		case <-time.After(10 * time.Second):
		}
	}
}

var errStopRead = errors.New("stop")

// deviceListRecord sends the EDUs one log record calls for.
func (s *Server) deviceListRecord(seq uint64, rec log.Record) {
	switch rec.Kind {
	case projections.KindKeysUpload, projections.KindLogin, projections.KindLogout, projections.KindCrossSigning,
		projections.KindKeySignatures, projections.KindDeviceName, projections.KindDeactivate, projections.KindEvent:
	default:
		return
	}
	v, err := projections.Decode(rec)
	if err != nil {
		return
	}
	switch r := v.(type) {
	case *projections.EventRecord:
		s.joinDeviceLists(r)
	case *projections.KeysUploadRecord:
		if r.DeviceKeys != nil {
			s.sendDeviceUpdates(seq, r.UserID, []string{r.DeviceID}, false, false)
		}
	case *projections.LoginRecord:
		s.sendDeviceUpdates(seq, r.UserID, []string{r.DeviceID}, false, false)
	case *projections.DeviceNameRecord:
		s.sendDeviceUpdates(seq, r.UserID, []string{r.DeviceID}, false, false)
	case *projections.LogoutRecord:
		// A logout of all devices does not name them: the update has no
		// prev_id, so receivers with a cached list resync.
		s.sendDeviceUpdates(seq, r.UserID, []string{r.DeviceID}, true, r.All)
	case *projections.DeactivateRecord:
		s.sendDeviceUpdates(seq, r.UserID, []string{""}, true, true)
	case *projections.CrossSigningRecord:
		s.sendSigningKeyUpdate(seq, r.UserID)
	case *projections.KeySignaturesRecord:
		byUser := map[string][]string{}
		var users []string
		for _, sig := range r.Signatures {
			if sig.SignerUser != sig.TargetUser || !s.accounts.isLocal(sig.TargetUser) {
				continue
			}
			if _, ok := byUser[sig.TargetUser]; !ok {
				users = append(users, sig.TargetUser)
				byUser[sig.TargetUser] = nil
			}
			if _, err := s.store.DeviceKeys(sig.TargetUser, sig.TargetKey); err == nil {
				if !slices.Contains(byUser[sig.TargetUser], sig.TargetKey) {
					byUser[sig.TargetUser] = append(byUser[sig.TargetUser], sig.TargetKey)
				}
			}
		}
		for _, u := range users {
			if devs := byUser[u]; len(devs) > 0 {
				s.sendDeviceUpdates(seq, u, devs, false, false)
			} else {
				s.sendSigningKeyUpdate(seq, u)
			}
		}
	}
}

// userServers lists the other servers sharing a room with a local user.
func (s *Server) userServers(user string) []string {
	urs, err := s.store.UserRooms(user)
	if err != nil {
		return nil
	}
	set := map[string]bool{}
	for _, ur := range urs {
		if ur.Membership == projections.MemberJoin {
			for _, d := range s.remoteServers(ur.RoomID) {
				set[d] = true
			}
		}
	}
	out := make([]string, 0, len(set))
	for d := range set {
		out = append(out, d)
	}
	sort.Strings(out)
	return out
}

// nextStream records seq as the user's latest stream ID and returns the
// previous one (0: none known).
func (s *Server) nextStream(user string, seq uint64) uint64 {
	c := &s.e2ee.remote
	c.mu.Lock()
	prev, ok := c.lastSent[user]
	c.mu.Unlock()
	if !ok && seq > 1 {
		prev, _ = s.store.LastKeyChange(user, seq-1, maxStreamScan)
	}
	c.mu.Lock()
	if c.lastSent == nil {
		c.lastSent = map[string]uint64{}
	}
	if len(c.lastSent) >= maxRemoteCached {
		clear(c.lastSent)
	}
	c.lastSent[user] = seq
	c.mu.Unlock()
	return prev
}

// forgetStream drops the memo of a user's last stream ID when a change
// goes to no server (a user in no shared room, such as a new account): the
// next update looks the previous change up in the store instead.
func (s *Server) forgetStream(user string) {
	c := &s.e2ee.remote
	c.mu.Lock()
	delete(c.lastSent, user)
	c.mu.Unlock()
}

// sendDeviceUpdates sends one m.device_list_update per device, all at
// stream ID seq; gap leaves prev_id empty to make receivers resync.
func (s *Server) sendDeviceUpdates(seq uint64, user string, devices []string, deleted, gap bool) {
	if s.fed == nil || !s.accounts.isLocal(user) {
		return
	}
	dests := s.userServers(user)
	if len(dests) == 0 {
		s.forgetStream(user)
		return
	}
	prev := s.nextStream(user, seq)
	var prevIDs []int64
	if prev > 0 && !gap {
		prevIDs = []int64{int64(prev)}
	}
	keys, _ := s.localDeviceKeys(user, devices)
	for _, d := range devices {
		u := deviceListUpdate{UserID: user, DeviceID: d, StreamID: int64(seq), PrevID: prevIDs}
		if u.PrevID == nil {
			u.PrevID = []int64{}
		}
		if deleted {
			u.Deleted = true
		} else if k, ok := keys[d]; ok {
			u.Keys = k
		}
		if dev, err := s.store.Device(user, d); err == nil {
			u.DisplayName = dev.DisplayName
		}
		s.fed.SendEDU(dests, "m.device_list_update", u)
	}
}

func (s *Server) sendSigningKeyUpdate(seq uint64, user string) {
	if s.fed == nil || !s.accounts.isLocal(user) {
		return
	}
	dests := s.userServers(user)
	if len(dests) == 0 {
		s.forgetStream(user)
		return
	}
	s.nextStream(user, seq)
	c := map[string]any{"user_id": user}
	if k, err := s.localCrossSigningKey(user, projections.CrossSigningMaster, ""); err == nil {
		c["master_key"] = k
	}
	if k, err := s.localCrossSigningKey(user, projections.CrossSigningSelfSigning, ""); err == nil {
		c["self_signing_key"] = k
	}
	s.fed.SendEDU(dests, "m.signing_key_update", c)
}

// maxJoinUpdates bounds the device list updates one join sends (they share
// the destination's bounded EDU queue with to-device messages; a server
// that gets fewer queries the keys when its clients need them).
const maxJoinUpdates = 200

// joinDeviceLists sends device lists to servers that start sharing a room
// with a local user: "Servers must send m.device_list_update EDUs to all
// the servers who share a room with a given local user, and must be sent
// whenever [...] that user joins a room which contains servers which are
// not already receiving updates for that user's device list". When a local
// user joins, their devices go to the room's servers that share no other
// room with them; when another server's first user joins, the devices of
// the room's local users that share no other room with that server go to
// it. Each update carries the user's current stream ID and no prev_id.
func (s *Server) joinDeviceLists(ev *projections.EventRecord) {
	if s.fed == nil || ev.Status != projections.Accepted || ev.Type != "m.room.member" || ev.StateKey == nil || ev.Membership != "join" {
		return
	}
	target := *ev.StateKey
	if s.accounts.isLocal(target) {
		if fresh := s.newServersFor(target, ev.RoomID, s.remoteServers(ev.RoomID)); len(fresh) > 0 {
			s.sendDeviceList(target, fresh, maxJoinUpdates)
		}
		return
	}
	srv := serverOf(target)
	members, err := s.store.Members(ev.RoomID)
	if err != nil {
		return
	}
	var locals []string
	for _, m := range members {
		if m.Membership != projections.MemberJoin {
			continue
		}
		if m.UserID != target && serverOf(m.UserID) == srv {
			return // the server was in the room already
		}
		if s.accounts.isLocal(m.UserID) {
			locals = append(locals, m.UserID)
		}
	}
	budget := maxJoinUpdates
	for _, u := range locals {
		if budget <= 0 {
			return
		}
		if len(s.newServersFor(u, ev.RoomID, []string{srv})) == 1 {
			budget -= s.sendDeviceList(u, []string{srv}, budget)
		}
	}
}

// newServersFor returns the servers among cands that share no joined room
// other than room with the local user.
func (s *Server) newServersFor(user, room string, cands []string) []string {
	urs, err := s.store.UserRooms(user)
	if err != nil {
		return nil
	}
	known := map[string]bool{}
	for _, ur := range urs {
		if ur.Membership == projections.MemberJoin && ur.RoomID != room {
			for _, d := range s.remoteServers(ur.RoomID) {
				known[d] = true
			}
		}
	}
	var out []string
	for _, d := range cands {
		if !known[d] {
			out = append(out, d)
		}
	}
	return out
}

// sendDeviceList sends up to limit updates, one per device of a local user
// that has keys, at the user's current stream ID, and returns how many.
func (s *Server) sendDeviceList(user string, dests []string, limit int) int {
	stream, err := s.deviceListStream(user)
	if err != nil || stream == 0 {
		return 0
	}
	keys, err := s.localDeviceKeys(user, nil)
	if err != nil {
		return 0
	}
	ids := make([]string, 0, len(keys))
	for d := range keys {
		ids = append(ids, d)
	}
	sort.Strings(ids)
	n := 0
	for _, d := range ids {
		if n >= limit {
			break
		}
		u := deviceListUpdate{UserID: user, DeviceID: d, StreamID: int64(stream), PrevID: []int64{}, Keys: keys[d]}
		if dev, err := s.store.Device(user, d); err == nil {
			u.DisplayName = dev.DisplayName
		}
		s.fed.SendEDU(dests, "m.device_list_update", u)
		n++
	}
	return n
}
