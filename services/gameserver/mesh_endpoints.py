"""The session operations that cross GameServers over the service mesh: both ends of each.

Calling side: ask a session's owner on another node to let go (:meth:`release_elsewhere`,
for LOGIN and RECONNECT), reach a user on whatever node holds them (:meth:`whisper`), kick
a user wherever they are (:meth:`kick_user`, the admin kick). Answering side: the mesh
methods peers and the admin CLI call on us (``release``, ``whisper``, ``kick_user``,
``adopt``; the app registers the ``mesh_*`` methods).

Kept out of the hub because these are this node's contract with its peers: each call's body,
its deadline and what happens when the peer does not answer sit beside the method that
answers it, while the hub keeps the life of the sessions it holds.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from gameserver import metrics
from gameserver.context import Reject, store_unavailable_as_reject
from gameserver.mesh import MeshError
from gameserver.state import Session
from gameserver.store import Location, ResumeRejected
from protocol.messages import ErrorCode, KickReason, MsgType
from servicekit.redis_health import REDIS_FAILURES

if TYPE_CHECKING:
    from gameserver.hub import Hub

#: The hub's logger: these lines were the hub's, and keep their ``logger`` field.
log = logging.getLogger("gameserver.hub")


class MeshEndpoints:
    """Cross-node session calls, made and answered on behalf of the hub.

    Holds a reference to the hub: every call reads or changes the sessions it holds, and
    the mesh client is set on the hub by the app after the hub exists.
    """

    def __init__(self, hub: Hub) -> None:
        self._hub = hub

    async def release_elsewhere(self, location: Location, reason: KickReason,
                                end: bool = False) -> bool:
        """Ask the session's owner on another node to flush, kick and forget it.

        False when it could not be asked (no mesh, unreachable, too slow): callers then
        take over anyway; fencing keeps a stale owner from writing.
        """
        hub = self._hub
        if hub.mesh is None:
            return False
        try:
            reply = await hub.mesh.call(location.node_id, "release", {
                "session_id": location.session_id, "reason": reason.value, "end": end},
                hub.mesh_deadline_s)
        except MeshError as exc:
            log.warning("Owner of SessionId=%d (node %d) not reached (%s): taking over anyway",
                        location.session_id, location.node_id, exc.code)
            return False
        except Exception:
            log.exception("Asking node %d to release SessionId=%d failed: taking over anyway",
                          location.node_id, location.session_id)
            return False
        return bool(reply.get("released"))

    async def mesh_release(self, body: dict[str, Any]) -> dict[str, Any]:
        """Mesh method: stop owning a session (its new owner, or an admin, asks)."""
        hub = self._hub
        session = hub.sessions.by_id.get(int(body["session_id"]))
        if session is None:
            return {"released": False}
        await hub.commits.barrier()
        if session.closed:
            return {"released": False}
        if session.socket_id is not None and session.gateway_id is not None:
            hub.kick(session.gateway_id, session.socket_id, KickReason(body["reason"]))
        hub.sessions.forget(session)
        if body.get("end"):
            await hub.store.logout(session.session_id, session.user_id, session.epoch)
        log.info("Session released: SessionId=%d, Reason=%s", session.session_id,
                 body["reason"])
        return {"released": True}

    async def whisper(self, sender: Session, to_user_id: int, text: str) -> bool:
        """Deliver to the recipient's socket wherever it is; False when they are offline."""
        hub = self._hub
        payload = {"from_user_id": sender.user_id, "text": text}
        target = hub.sessions.by_user.get(to_user_id)
        if target is not None:
            return hub.push(target, MsgType.WHISPER_NTF, payload)
        with store_unavailable_as_reject():
            async with asyncio.timeout_at(hub.redis_deadline()):
                location = await hub.store.locate_user(to_user_id)
        if location is None or not location.attached:
            return False
        if location.node_id == hub.node_id or hub.mesh is None:
            return False  # ours but not attached here any more: offline
        try:
            reply = await hub.mesh.call(location.node_id, "whisper",
                                        {"to_user_id": to_user_id, **payload},
                                        hub.mesh_deadline_s)
        except MeshError as exc:
            raise Reject(ErrorCode.SERVER_UNAVAILABLE,
                         f"the recipient's GameServer did not answer ({exc.code})") from None
        return bool(reply.get("delivered"))

    async def mesh_whisper(self, body: dict[str, Any]) -> dict[str, Any]:
        """Mesh method: push a whisper to the recipient if they are attached here."""
        hub = self._hub
        target = hub.sessions.by_user.get(int(body["to_user_id"]))
        delivered = target is not None and hub.push(target, MsgType.WHISPER_NTF, {
            "from_user_id": body["from_user_id"], "text": body["text"]})
        return {"delivered": delivered}

    async def kick_user(self, user_id: int, reason: KickReason) -> bool:
        """Kick a user wherever they are and end the session (admin). Raises TimeoutError
        (one of REDIS_FAILURES) past ``REDIS_REQUEST_TIMEOUT_S`` plus one mesh deadline."""
        hub = self._hub
        async with asyncio.timeout(hub.config.redis_request_timeout_s + hub.mesh_deadline_s):
            return await self._kick_user(user_id, reason)

    async def _kick_user(self, user_id: int, reason: KickReason) -> bool:
        hub = self._hub
        local = hub.sessions.by_user.get(user_id)
        if local is not None:
            return bool((await self.mesh_release({"session_id": local.session_id,
                                                  "reason": reason.value, "end": True}))
                        ["released"])
        location = await hub.store.locate_user(user_id)
        if location is None:
            return False
        if not location.attached:
            # In its reconnect grace: no socket to kick, but the session must not resume.
            return await hub.store.end_detached(location.session_id, user_id)
        if location.node_id == hub.node_id:
            return False
        return await self.release_elsewhere(location, reason, end=True)

    async def mesh_kick_user(self, body: dict[str, Any]) -> dict[str, Any]:
        """Mesh method: :meth:`kick_user` for a peer or the admin CLI."""
        reason = KickReason(body.get("reason", KickReason.ADMIN_KICK.value))
        return {"kicked": await self.kick_user(int(body["user_id"]), reason)}

    async def mesh_adopt(self, body: dict[str, Any]) -> dict[str, Any]:
        """Mesh method: a draining peer hands us a session still attached to its socket."""
        hub = self._hub
        session_id = int(body["session_id"])
        gateway_id = body["gateway"].encode()
        socket_id = bytes.fromhex(body["socket"])
        # The session's user, so that resume.lua's keys are known without a read first
        # (resume.lua checks it; a drainer of an older version does not send it).
        user_id = int(body["user_id"]) if "user_id" in body else None
        try:
            async with asyncio.timeout_at(hub.redis_deadline()):
                result = await hub.store.resume(session_id, "", "", gateway_id,
                                                socket_id.hex(), hub.lease_ms, None, user_id)
        except ResumeRejected as rejected:
            return {"adopted": False, "code": rejected.code}
        except REDIS_FAILURES as exc:
            # The drainer keeps the session (and kicks it with SERVER_SHUTDOWN if nobody
            # takes it); should resume.lua have run regardless, fencing settles who owns it.
            log.error("Cannot adopt handed-over session, Redis unavailable: SessionId=%d: %s",
                      session_id, str(exc) or type(exc).__name__)
            return {"adopted": False, "code": ErrorCode.SERVER_UNAVAILABLE.value}
        hub.take_over(gateway_id, socket_id, session_id, result, result.accept_lz4, None)
        metrics.sessions_resumed.labels("handover").inc()
        return {"adopted": True}
