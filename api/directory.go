package api

import (
	"encoding/json"
	"errors"
	"sort"
	"strconv"
	"strings"

	"engram/projections"
)

func (s *Server) directoryRoutes() {
	rt := &s.rt
	rt.client("GET", "/directory/list/room/{roomId}", public, s.getDirectoryVisibility)
	rt.client("PUT", "/directory/list/room/{roomId}", authed, s.putDirectoryVisibility)
	rt.client("GET", "/publicRooms", public, s.publicRoomsGet)
	rt.client("POST", "/publicRooms", authed, s.publicRoomsPost)
}

func (s *Server) knownRoom(room string) error {
	if !validRoomID(room) {
		return errNotFound("Room not found")
	}
	if _, err := s.store.RoomVersion(room); err != nil {
		if errors.Is(err, projections.ErrNotFound) {
			return errNotFound("Room not found")
		}
		return err
	}
	return nil
}

func (s *Server) getDirectoryVisibility(r *Req) error {
	room := r.Param("roomId")
	if err := s.knownRoom(room); err != nil {
		return err
	}
	pub, err := s.store.RoomPublished(room)
	if err != nil {
		return err
	}
	vis := "private"
	if pub {
		vis = "public"
	}
	return r.json(map[string]string{"visibility": vis})
}

// putDirectoryVisibility serves PUT /directory/list/room/{roomId}. Like
// Synapse, a server admin, or a joined user who could send
// m.room.canonical_alias, may change it.
func (s *Server) putDirectoryVisibility(r *Req) error {
	room := r.Param("roomId")
	var b struct {
		Visibility *string `json:"visibility"`
	}
	if e := r.decode(&b); e != nil {
		return e
	}
	vis := "public" // "Defaults to public."
	if b.Visibility != nil {
		vis = *b.Visibility
	}
	if vis != "public" && vis != "private" {
		return errInvalid("visibility must be public or private")
	}
	if err := s.knownRoom(room); err != nil {
		return err
	}
	if !s.isAdmin(r.User) {
		m, err := s.store.MemberOf(room, r.User)
		if err != nil {
			return err
		}
		p, err := s.powerOf(room)
		if err != nil {
			return err
		}
		if m.Membership != projections.MemberJoin || !p.canSend(r.User, "m.room.canonical_alias", true) {
			return errForbidden("This user is not permitted to publish rooms to the room list")
		}
	}
	pub, err := s.store.RoomPublished(room)
	if err != nil {
		return err
	}
	if pub != (vis == "public") {
		if err := s.appendRecord(&projections.DirectoryRecord{RoomID: room, Public: vis == "public", UserID: r.User}); err != nil {
			return err
		}
	}
	return r.json(struct{}{})
}

// roomChunk is a room as the published room directory and the room summary
// describe it (PublishedRoomsChunk).
type roomChunk struct {
	RoomID           string  `json:"room_id"`
	Name             *string `json:"name,omitempty"`
	Topic            *string `json:"topic,omitempty"`
	CanonicalAlias   *string `json:"canonical_alias,omitempty"`
	NumJoinedMembers int     `json:"num_joined_members"`
	WorldReadable    bool    `json:"world_readable"`
	GuestCanJoin     bool    `json:"guest_can_join"`
	JoinRule         string  `json:"join_rule,omitempty"`
	RoomType         *string `json:"room_type,omitempty"`
	AvatarURL        *string `json:"avatar_url,omitempty"`
	// Room summary only.
	RoomVersion    string   `json:"room_version,omitempty"`
	Encryption     *string  `json:"encryption,omitempty"`
	AllowedRoomIDs []string `json:"allowed_room_ids,omitempty"`
	Membership     string   `json:"membership,omitempty"`
}

// stateString reads one string field of a current state event's content.
func (s *Server) stateString(room, typ, field string) *string {
	c, err := s.stateContent(room, typ, "")
	if err != nil {
		return nil
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(c, &m) != nil {
		return nil
	}
	var v string
	if json.Unmarshal(m[field], &v) != nil {
		return nil
	}
	return &v
}

// plainTopic is a room's text/plain topic: the m.topic text/plain
// representation, else the legacy topic field.
func (s *Server) plainTopic(room string) *string {
	c, err := s.stateContent(room, "m.room.topic", "")
	if err != nil {
		return nil
	}
	var t struct {
		Topic  *string `json:"topic"`
		MTopic struct {
			Text []struct {
				Mimetype string `json:"mimetype"`
				Body     string `json:"body"`
			} `json:"m.text"`
		} `json:"m.topic"`
	}
	if json.Unmarshal(c, &t) != nil {
		return nil
	}
	for _, x := range t.MTopic.Text {
		if x.Mimetype == "" || x.Mimetype == "text/plain" {
			b := x.Body
			return &b
		}
	}
	return t.Topic
}

// roomInfo describes a room from its current state.
func (s *Server) roomInfo(room string) (*roomChunk, error) {
	vid, err := s.store.RoomVersion(room)
	if err != nil {
		return nil, err
	}
	c := &roomChunk{RoomID: room, RoomVersion: vid}
	c.Name = s.stateString(room, "m.room.name", "name")
	c.Topic = s.plainTopic(room)
	c.CanonicalAlias = s.stateString(room, "m.room.canonical_alias", "alias")
	if c.CanonicalAlias != nil && *c.CanonicalAlias == "" {
		c.CanonicalAlias = nil
	}
	c.AvatarURL = s.stateString(room, "m.room.avatar", "url")
	c.RoomType = s.stateString(room, "m.room.create", "type")
	c.Encryption = s.stateString(room, "m.room.encryption", "algorithm")
	jr := "invite"
	if v := s.stateString(room, "m.room.join_rules", "join_rule"); v != nil {
		jr = *v
	}
	c.JoinRule = jr
	if jr == "restricted" || jr == "knock_restricted" {
		if jc, err := s.stateContent(room, "m.room.join_rules", ""); err == nil {
			var j struct {
				Allow []struct {
					Type   string `json:"type"`
					RoomID string `json:"room_id"`
				} `json:"allow"`
			}
			json.Unmarshal(jc, &j)
			for _, a := range j.Allow {
				if a.Type == "m.room_membership" && a.RoomID != "" {
					c.AllowedRoomIDs = append(c.AllowedRoomIDs, a.RoomID)
				}
			}
		}
	}
	if g := s.stateString(room, "m.room.guest_access", "guest_access"); g != nil && *g == "can_join" {
		c.GuestCanJoin = true
	}
	vis, err := s.store.HistoryVisibility(room)
	if err != nil {
		return nil, err
	}
	c.WorldReadable = vis == projections.VisWorldReadable
	ms, err := s.store.Members(room)
	if err != nil {
		return nil, err
	}
	for _, m := range ms {
		if m.Membership == projections.MemberJoin {
			c.NumJoinedMembers++
		}
	}
	return c, nil
}

type publicRoomsQuery struct {
	Limit  *int   `json:"limit"`
	Since  string `json:"since"`
	Filter struct {
		GenericSearchTerm string    `json:"generic_search_term"`
		RoomTypes         []*string `json:"room_types"`
	} `json:"filter"`
	IncludeAllNetworks    bool   `json:"include_all_networks"`
	ThirdPartyInstanceID  string `json:"third_party_instance_id"`
	server                string
	roomTypesFilterActive bool
}

func (s *Server) publicRoomsGet(r *Req) error {
	q := &publicRoomsQuery{Since: r.Query("since"), server: r.Query("server")}
	if l := r.Query("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 0 {
			return errInvalid("Invalid limit")
		}
		q.Limit = &n
	}
	if done, err := s.fedPublicRooms(r, q, false); done || err != nil {
		return err
	}
	return s.publicRooms(r, q)
}

func (s *Server) publicRoomsPost(r *Req) error {
	q := &publicRoomsQuery{}
	if e := r.decode(q); e != nil {
		return e
	}
	if q.Limit != nil && *q.Limit < 0 {
		return errInvalid("Invalid limit")
	}
	var probe struct {
		Filter map[string]json.RawMessage `json:"filter"`
	}
	b, _ := r.body()
	json.Unmarshal(b, &probe)
	_, present := probe.Filter["room_types"]
	q.roomTypesFilterActive = present && len(q.Filter.RoomTypes) > 0
	q.server = r.Query("server")
	if done, err := s.fedPublicRooms(r, q, true); done || err != nil {
		return err
	}
	return s.publicRooms(r, q)
}

// publicRooms lists the published room directory, largest rooms first
// (then by room ID), as Synapse orders it. Tokens are offsets into that
// order ("o<N>"): the directory is small and changes rarely.
func (s *Server) publicRooms(r *Req, q *publicRoomsQuery) error {
	if q.server != "" && q.server != s.cfg.ServerName {
		return errNotFound("Cannot reach server " + q.server)
	}
	offset := 0
	if q.Since != "" {
		n, err := strconv.Atoi(strings.TrimPrefix(q.Since, "o"))
		if err != nil || n < 0 || !strings.HasPrefix(q.Since, "o") {
			return errInvalid("Invalid since token")
		}
		offset = n
	}
	ids, err := s.store.PublishedRooms()
	if err != nil {
		return err
	}
	term := strings.ToLower(strings.TrimSpace(q.Filter.GenericSearchTerm))
	chunks := []*roomChunk{}
	if q.ThirdPartyInstanceID == "" {
		for _, id := range ids {
			c, err := s.roomInfo(id)
			if errors.Is(err, projections.ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			// Synapse lists published rooms people can get into or read.
			switch c.JoinRule {
			case "public", "knock", "knock_restricted":
			default:
				if !c.WorldReadable {
					continue
				}
			}
			if term != "" && !chunkMatches(c, term) {
				continue
			}
			if q.roomTypesFilterActive && !roomTypeMatches(c.RoomType, q.Filter.RoomTypes) {
				continue
			}
			c.RoomVersion, c.Encryption, c.AllowedRoomIDs = "", nil, nil
			chunks = append(chunks, c)
		}
	}
	sort.SliceStable(chunks, func(i, j int) bool {
		if chunks[i].NumJoinedMembers != chunks[j].NumJoinedMembers {
			return chunks[i].NumJoinedMembers > chunks[j].NumJoinedMembers
		}
		return chunks[i].RoomID < chunks[j].RoomID
	})
	total := len(chunks)
	offset = min(offset, total)
	end := total
	if q.Limit != nil && *q.Limit > 0 {
		end = min(total, offset+*q.Limit)
	}
	out := map[string]any{"chunk": chunks[offset:end], "total_room_count_estimate": total}
	if end < total {
		out["next_batch"] = "o" + strconv.Itoa(end)
	}
	if offset > 0 {
		prev := 0
		if q.Limit != nil && *q.Limit > 0 {
			prev = max(0, offset-*q.Limit)
		}
		out["prev_batch"] = "o" + strconv.Itoa(prev)
	}
	return r.json(out)
}

func chunkMatches(c *roomChunk, term string) bool {
	for _, f := range []*string{c.Name, c.Topic, c.CanonicalAlias} {
		if f != nil && strings.Contains(strings.ToLower(*f), term) {
			return true
		}
	}
	return false
}

// roomTypeMatches: "To include rooms without a room type, specify null
// within this list."
func roomTypeMatches(t *string, want []*string) bool {
	for _, w := range want {
		if (w == nil && t == nil) || (w != nil && t != nil && *w == *t) {
			return true
		}
	}
	return false
}
