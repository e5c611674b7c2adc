"""The console's views: read-only lists and details, and the staff actions.

No view has a create, edit or delete form: counters (`tickets_sold`,
`quantity_available`, `quantity_sold`) and a booking's status only ever change
through the domain services, which the actions call (app.admin.service). An action's
GET only shows what it will do; its POST (with the session's CSRF token) acts.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from sqladmin import ModelView, action, expose
from sqladmin.filters import BooleanFilter, StaticValuesFilter
from sqladmin.flash import flash
from sqladmin.pagination import Pagination
from sqlalchemy import ColumnElement, Select, String, cast, or_, select
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse

from app.admin import service
from app.admin.models import AuditLog
from app.admin.security import signed_in_staff
from app.auth.models import User
from app.bookings import door_list
from app.bookings.models import Booking, BookingItem
from app.core.errors import AppError
from app.core.metrics import BOOKINGS_CANCELLED
from app.events.models import Event, TicketType
from app.events.status import EVENT_STATUS, EventStatus, status_filter
from app.holds.models import Hold
from app.inventory.service import Aftermath
from app.waitlist.models import WaitlistEntry
from app.webhooks.models import WebhookDelivery

_STATUS_CHOICES = [(s.value, s.value.replace("_", " ")) for s in EventStatus]


class ConsoleView(ModelView):
    """Read-only by default: staff change data only through the actions below."""

    can_create = False
    can_edit = False
    can_delete = False
    can_import = False
    can_export = False
    page_size = 25
    page_size_options = [25, 50, 100]

    @property
    def api(self) -> Any:
        """The FastAPI application the console is mounted on (its state, its outbox)."""
        return self._admin_ref.app

    async def annotate(self, rows: Sequence[Any]) -> None:
        """Attach values computed in SQL (statuses, names) to the rows shown."""

    async def list(self, request: Request) -> Pagination:
        pagination = await super().list(request)
        await self.annotate(pagination.rows)
        return pagination

    def search_query(self, stmt: Select, term: str) -> Select:
        # PostgreSQL text cannot hold NUL: such a search simply finds without it.
        return super().search_query(stmt, term.replace("\x00", ""))

    async def get_object_for_details(self, request: Request) -> Any:
        if not _ids([request.path_params.get("pk", "")]):
            return None  # not an id a BIGINT key can hold: 404
        obj = await super().get_object_for_details(request)
        if obj is not None:
            await self.annotate([obj])
        return obj

    async def _rows(self, stmt: Select) -> list[Any]:
        return list(await self._run_arbitrary_query(stmt))

    def _pks(self, request: Request) -> list[str]:
        raw = request.query_params.get("pks", "")
        return [pk for pk in raw.split(",") if pk]

    async def _confirm(
        self,
        request: Request,
        *,
        endpoint: str,
        heading: str,
        explanation: str,
        button: str,
        labels: list[str],
        pks: list[str],
    ) -> Response:
        back = str(request.url_for("admin:list", identity=self.identity))
        if len(pks) == 1:
            back = str(request.url_for("admin:details", identity=self.identity, pk=pks[0]))
        context = {
            "title": self.name_plural,
            "heading": heading,
            "explanation": explanation,
            "button": button,
            "labels": labels,
            "pks": pks,
            "action_url": str(request.url_for(f"admin:view-{self.identity}-{endpoint}")),
            "back_url": back,
        }
        return await self.templates.TemplateResponse(request, "admin/confirm.html", context)

    async def _posted_pks(self, request: Request) -> list[str]:
        form = await request.form()
        return [str(pk) for pk in form.getlist("pks") if str(pk)]

    async def _act_on_each(
        self, request: Request, what: str, act: Callable[[User, int], Awaitable[tuple[str, str]]]
    ) -> Response:
        """An action's POST: ``act(staff, id)`` for each id posted, each answered by a flash
        message (what ``act`` returns, or why it failed, titled ``what #id``)."""
        staff = signed_in_staff(request)
        pks = await self._posted_pks(request)
        for pk in pks:
            try:
                title, message = await act(staff, _id(pk))
            except (AppError, ValueError) as exc:
                flash(request, _reason(exc), "danger", f"{what} #{pk}")
            else:
                flash(request, message, "success", title)
        return self._back(request, pks)

    def _back(self, request: Request, pks: list[str]) -> RedirectResponse:
        if len(pks) == 1:
            url = request.url_for("admin:details", identity=self.identity, pk=pks[0])
        else:
            url = request.url_for("admin:list", identity=self.identity)
        return RedirectResponse(url, status_code=303)


def _event_status_condition(value: str) -> Any:
    try:
        return status_filter([EventStatus(value)])
    except ValueError:
        return None


class EventStatusFilter:
    """The event's status as the API computes it (one SQL expression)."""

    has_operator = False
    template = "sqladmin/filters/lookup_filter.html"
    title = "Status"
    parameter_name = "status"

    async def lookups(self, request: Request, model: Any, run_query: Any) -> list[tuple[str, str]]:
        return [("__all", "All"), *_STATUS_CHOICES]

    async def get_filtered_query(self, query: Select, value: Any, model: Any) -> Select:
        condition = _event_status_condition(str(value))
        if condition is None:
            return query
        if model is Event:
            return query.where(condition)
        return query.where(model.event_id.in_(select(Event.id).where(condition)))


# ---------------------------------------------------------------- users


class UserAdmin(ConsoleView, model=User):
    name, name_plural, icon = "User", "Users", "fa-solid fa-user"
    column_list = [
        User.id,
        User.username,
        User.email,
        User.role,
        User.is_staff,
        User.is_active,
        User.date_joined,
    ]
    # Never the password hash: the lists name every column they show.
    column_details_list = [*column_list, User.updated_at, User.password_changed_at]
    column_searchable_list = [User.username, User.email]
    column_sortable_list = [User.id, User.username, User.email, User.date_joined]
    column_default_sort = (User.id, True)
    column_filters = [
        StaticValuesFilter(User.role, [("attendee", "attendee"), ("organizer", "organizer")]),
        BooleanFilter(User.is_active),
        BooleanFilter(User.is_staff),
    ]

    @action(name="deactivate", label="Deactivate account")
    async def deactivate_confirm(self, request: Request) -> Response:
        pks = self._pks(request)
        users = await self._rows(
            select(User.id, User.username, User.email, User.is_active).where(User.id.in_(_ids(pks)))
        )
        return await self._confirm(
            request,
            endpoint="deactivate",
            heading="Deactivate accounts",
            explanation="They can no longer sign in; their tokens stop working at once.",
            button="Deactivate",
            labels=[f"#{u.id} {u.username} <{u.email}>" for u in users if u.is_active],
            pks=[str(u.id) for u in users if u.is_active],
        )

    @expose("/deactivate", methods=["POST"])
    async def deactivate(self, request: Request) -> Response:
        async def deactivate(staff: User, user_id: int) -> tuple[str, str]:
            user = await service.deactivate_user(self.api.state.sessionmaker, staff, user_id)
            return "Deactivated", f"{user.username} is deactivated."

        return await self._act_on_each(request, "User", deactivate)


# ---------------------------------------------------------------- events


class EventAdmin(ConsoleView, model=Event):
    name, name_plural, icon = "Event", "Events", "fa-solid fa-calendar"
    column_list = [
        Event.id,
        Event.name,
        Event.location,
        Event.start_time,
        "status",
        Event.total_capacity,
        Event.tickets_sold,
        Event.tickets_held,
        Event.organizer_id,
    ]
    column_details_list = [
        Event.id,
        Event.name,
        Event.description,
        Event.location,
        Event.start_time,
        Event.end_time,
        "status",
        Event.total_capacity,
        Event.tickets_sold,
        Event.tickets_held,
        Event.organizer_id,
        Event.cancelled_at,
        Event.created_at,
        Event.updated_at,
    ]
    column_labels = {"status": "Status"}
    column_searchable_list = [Event.name, Event.location]
    column_sortable_list = [Event.id, Event.name, Event.start_time, Event.tickets_sold]
    column_default_sort = (Event.start_time, False)
    column_filters = [EventStatusFilter()]

    async def annotate(self, rows: Sequence[Any]) -> None:
        if not rows:
            return
        statuses = dict(
            await self._rows(
                select(Event.id, EVENT_STATUS).where(Event.id.in_([e.id for e in rows]))
            )
        )
        for event in rows:
            event.status = statuses.get(event.id)

    @action(name="cancel", label="Cancel event")
    async def cancel_confirm(self, request: Request) -> Response:
        pks = self._pks(request)
        events = await self._rows(
            select(Event.id, Event.name, Event.tickets_sold).where(
                Event.id.in_(_ids(pks)), Event.cancelled_at.is_(None)
            )
        )
        return await self._confirm(
            request,
            endpoint="cancel",
            heading="Cancel events",
            explanation=(
                "Every confirmed booking of these events is cancelled and its attendee "
                "emailed; the tickets are released. A cancelled event cannot be changed."
            ),
            button="Cancel the events",
            labels=[f"#{e.id} {e.name} ({e.tickets_sold} tickets sold)" for e in events],
            pks=[str(e.id) for e in events],
        )

    @expose("/cancel", methods=["POST"])
    async def cancel(self, request: Request) -> Response:
        async def cancel(staff: User, event_id: int) -> tuple[str, str]:
            change = await service.cancel_event(self.api.state.sessionmaker, staff, event_id)
            cancelled = len(change.cancelled_booking_ids)
            return (
                "Cancelled",
                f"{change.row.event.name} is cancelled ({cancelled} bookings cancelled).",
            )

        return await self._act_on_each(request, "Event", cancel)

    @action(name="door-list", label="Export door list (CSV)", add_in_list=False)
    async def export_door_list(self, request: Request) -> Response:
        pks = self._pks(request)
        try:
            event_id = _id(pks[0] if len(pks) == 1 else "")
            await service.record_door_list_export(
                self.api.state.sessionmaker, signed_in_staff(request), event_id
            )
        except (AppError, ValueError) as exc:
            flash(request, _reason(exc), "danger", "Door list (one event at a time)")
            return RedirectResponse(request.url_for("admin:list", identity=self.identity), 303)
        return StreamingResponse(
            door_list.door_list(self.api.state.sessionmaker, event_id),
            media_type=door_list.MEDIA_TYPE,
            headers={
                "Content-Disposition": f'attachment; filename="{door_list.filename(event_id)}"'
            },
        )


class TicketTypeAdmin(ConsoleView, model=TicketType):
    name, name_plural, icon = "Ticket type", "Ticket types", "fa-solid fa-ticket"
    column_list = [
        TicketType.id,
        TicketType.event_id,
        TicketType.name,
        TicketType.price,
        TicketType.quantity_available,
        TicketType.quantity_sold,
        TicketType.quantity_held,
        TicketType.is_active,
    ]
    column_details_list = [
        *column_list,
        TicketType.description,
        TicketType.created_at,
        TicketType.updated_at,
    ]
    column_searchable_list = [TicketType.name]
    column_sortable_list = [TicketType.id, TicketType.event_id, TicketType.price]
    column_default_sort = (TicketType.id, False)
    column_filters = [BooleanFilter(TicketType.is_active, title="On sale"), EventStatusFilter()]


# ---------------------------------------------------------------- bookings


class BookingAdmin(ConsoleView, model=Booking):
    name, name_plural, icon = "Booking", "Bookings", "fa-solid fa-receipt"
    column_list = [
        Booking.booking_reference,
        Booking.status,
        "event_name",
        "attendee",
        Booking.total_price,
        Booking.created_at,
        Booking.cancelled_at,
    ]
    column_details_list = [
        Booking.id,
        Booking.booking_reference,
        Booking.status,
        Booking.event_id,
        "event_name",
        Booking.user_id,
        "attendee",
        "lines",
        Booking.total_price,
        Booking.created_at,
        Booking.updated_at,
        Booking.cancelled_at,
    ]
    column_labels = {
        Booking.booking_reference: "Reference",
        Booking.status: "Status",
        "event_name": "Event",
        "attendee": "Attendee",
        "lines": "Tickets",
        Booking.total_price: "Total",
        Booking.created_at: "Booked at",
        Booking.cancelled_at: "Cancelled at",
    }
    column_sortable_list = [Booking.created_at, Booking.total_price]
    column_default_sort = (Booking.created_at, True)
    column_filters = [
        StaticValuesFilter(Booking.status, [("confirmed", "confirmed"), ("cancelled", "cancelled")])
    ]
    # Searching by reference, attendee email or username, event name or event id.
    column_searchable_list = ["booking_reference"]

    def search_placeholder(self) -> str:
        return "Reference, email, username, event name or id"

    def search_query(self, stmt: Select, term: str) -> Select:
        return stmt.where(_reference_or_person(Booking, Booking.booking_reference, term))

    async def annotate(self, rows: Sequence[Any]) -> None:
        if not rows:
            return
        await _annotate_attendees(self, rows)
        ids = [b.id for b in rows]
        events = dict(
            await self._rows(
                select(Event.id, Event.name).where(Event.id.in_({b.event_id for b in rows}))
            )
        )
        items = await self._rows(
            select(BookingItem.booking_id, TicketType.name, BookingItem.quantity)
            .join(TicketType, TicketType.id == BookingItem.ticket_type_id)
            .where(BookingItem.booking_id.in_(ids))
            .order_by(BookingItem.id)
        )
        lines: dict[int, list[str]] = {i: [] for i in ids}
        for item in items:
            lines[item.booking_id].append(f"{item.quantity} x {item.name}")
        for booking in rows:
            booking.event_name = events.get(booking.event_id)
            booking.lines = ", ".join(lines[booking.id])

    @action(name="cancel", label="Cancel booking")
    async def cancel_confirm(self, request: Request) -> Response:
        ids = _ids(self._pks(request))
        rows = await self._rows(
            select(Booking.id, Booking.booking_reference, Event.name, User.email)
            .join(Event, Event.id == Booking.event_id)
            .join(User, User.id == Booking.user_id)
            .where(Booking.id.in_(ids), Booking.status == "confirmed")
        )
        return await self._confirm(
            request,
            endpoint="cancel",
            heading="Cancel bookings",
            explanation=(
                "The bookings are cancelled on their attendees' behalf, with the rules of "
                "their own cancel: the tickets are released once and the attendee is emailed."
            ),
            button="Cancel the bookings",
            labels=[f"{r.booking_reference} — {r.email} — {r.name}" for r in rows],
            pks=[str(r.id) for r in rows],
        )

    @expose("/cancel", methods=["POST"])
    async def cancel(self, request: Request) -> Response:
        staff = signed_in_staff(request)
        pks = await self._posted_pks(request)
        ids = _ids(pks)
        references = dict(
            await self._rows(
                select(Booking.id, Booking.booking_reference).where(Booking.id.in_(ids))
            )
        )
        for pk in pks:
            reference = references.get(int(pk)) if _ids([pk]) else None
            if reference is None:
                flash(request, "No booking with this id.", "danger", f"Booking #{pk}")
                continue
            try:
                aftermath = Aftermath()
                await service.cancel_booking(
                    self.api.state.sessionmaker,
                    staff,
                    reference,
                    settings=self.api.state.settings,
                    aftermath=aftermath,
                )
            except AppError as exc:
                flash(request, _reason(exc), "danger", str(reference))
                continue
            BOOKINGS_CANCELLED.inc()
            flash(request, f"Booking {reference} is cancelled.", "success", "Cancelled")
        return self._back(request, pks)


# ---------------------------------------------------------------- holds and waiting lists


class HoldAdmin(ConsoleView, model=Hold):
    name, name_plural, icon = "Hold", "Holds", "fa-solid fa-hourglass-half"
    column_list = [
        Hold.hold_reference,
        Hold.status,
        Hold.event_id,
        "attendee",
        Hold.total_price,
        Hold.expires_at,
        Hold.created_at,
        Hold.booking_id,
    ]
    column_details_list = [Hold.id, *column_list, Hold.user_id, Hold.ended_at]
    column_labels = {Hold.hold_reference: "Reference", "attendee": "Attendee"}
    column_sortable_list = [Hold.created_at, Hold.expires_at]
    column_default_sort = (Hold.id, True)
    column_filters = [
        StaticValuesFilter(
            Hold.status, [(s, s) for s in ("active", "converted", "released", "expired")]
        )
    ]
    column_searchable_list = ["hold_reference"]

    def search_placeholder(self) -> str:
        return "Reference, attendee email or username, event id"

    def search_query(self, stmt: Select, term: str) -> Select:
        return stmt.where(_reference_or_person(Hold, Hold.hold_reference, term))

    async def annotate(self, rows: Sequence[Any]) -> None:
        await _annotate_attendees(self, rows)


class WaitlistEntryAdmin(ConsoleView, model=WaitlistEntry):
    name, name_plural, icon = "Waiting entry", "Waiting lists", "fa-solid fa-people-line"
    column_list = [
        WaitlistEntry.id,
        WaitlistEntry.status,
        WaitlistEntry.event_id,
        WaitlistEntry.ticket_type_id,
        "attendee",
        WaitlistEntry.quantity,
        WaitlistEntry.created_at,
        WaitlistEntry.offered_at,
    ]
    column_details_list = [
        *column_list,
        WaitlistEntry.user_id,
        WaitlistEntry.hold_id,
        WaitlistEntry.ended_at,
    ]
    column_labels = {"attendee": "Attendee"}
    column_sortable_list = [WaitlistEntry.id, WaitlistEntry.created_at]
    column_default_sort = (WaitlistEntry.id, False)
    column_filters = [
        StaticValuesFilter(
            WaitlistEntry.status,
            [(s, s) for s in ("waiting", "offered", "converted", "expired", "left")],
        ),
        EventStatusFilter(),
    ]
    column_searchable_list = ["user_id"]

    def search_placeholder(self) -> str:
        return "Attendee email or username, event id"

    def search_query(self, stmt: Select, term: str) -> Select:
        return stmt.where(_reference_or_person(WaitlistEntry, None, term))

    async def annotate(self, rows: Sequence[Any]) -> None:
        await _annotate_attendees(self, rows)


# ---------------------------------------------------------------- webhooks


class WebhookDeliveryAdmin(ConsoleView, model=WebhookDelivery):
    """Attempts to deliver webhooks; the endpoints' signing secrets are never shown."""

    name, name_plural, icon = "Webhook delivery", "Webhook deliveries", "fa-solid fa-paper-plane"
    column_list = [
        WebhookDelivery.id,
        WebhookDelivery.created_at,
        WebhookDelivery.endpoint_id,
        WebhookDelivery.event_type,
        WebhookDelivery.attempt,
        WebhookDelivery.status_code,
        WebhookDelivery.duration_ms,
        WebhookDelivery.next_attempt_at,
    ]
    column_details_list = [
        *column_list,
        WebhookDelivery.message_id,
        WebhookDelivery.outbox_message_id,
        WebhookDelivery.error,
        WebhookDelivery.response_excerpt,
    ]
    column_searchable_list = [WebhookDelivery.event_type, WebhookDelivery.message_id]
    column_sortable_list = [WebhookDelivery.id, WebhookDelivery.created_at]
    column_default_sort = (WebhookDelivery.id, True)


# ---------------------------------------------------------------- audit log


class AuditLogAdmin(ConsoleView, model=AuditLog):
    name, name_plural, icon = "Audit entry", "Audit log", "fa-solid fa-clipboard-list"
    column_list = [
        AuditLog.id,
        AuditLog.created_at,
        AuditLog.actor_username,
        AuditLog.action,
        AuditLog.object_type,
        AuditLog.object_id,
    ]
    column_details_list = [*column_list, AuditLog.actor_id, AuditLog.before, AuditLog.after]
    column_labels = {AuditLog.actor_username: "Staff member"}
    column_searchable_list = [AuditLog.actor_username, AuditLog.action, AuditLog.object_id]
    column_sortable_list = [AuditLog.id, AuditLog.created_at]
    column_default_sort = (AuditLog.id, True)


VIEWS: list[type[ConsoleView]] = [
    BookingAdmin,
    HoldAdmin,
    WaitlistEntryAdmin,
    EventAdmin,
    TicketTypeAdmin,
    UserAdmin,
    WebhookDeliveryAdmin,
    AuditLogAdmin,
]


def _reference_or_person(model: Any, reference: Any, term: str) -> ColumnElement[bool]:
    """Rows of ``model`` whose reference, attendee (email or username), event name or
    event id matches the search term (case-insensitive substrings)."""
    term = term.replace("\x00", "").strip()
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    like = f"%{escaped}%"
    conditions = [
        model.user_id.in_(
            select(User.id).where(or_(User.email.ilike(like), User.username.ilike(like)))
        ),
        model.event_id.in_(select(Event.id).where(Event.name.ilike(like))),
    ]
    if reference is not None:
        conditions.append(cast(reference, String).ilike(like))
    if _ids([term]):
        conditions.append(model.event_id == int(term))
    return or_(*conditions)


async def _annotate_attendees(view: ConsoleView, rows: Sequence[Any]) -> None:
    """``attendee``: "username <email>" of each row's user, in one query."""
    if not rows:
        return
    people = {
        row.id: f"{row.username} <{row.email}>"
        for row in await view._rows(
            select(User.id, User.username, User.email).where(User.id.in_({r.user_id for r in rows}))
        )
    }
    for row in rows:
        row.attendee = people.get(row.user_id)


def _reason(exc: Exception) -> str:
    if isinstance(exc, AppError):
        return exc.detail
    return "Not a valid id."


def _ids(pks: Sequence[str]) -> list[int]:
    """The ids among ``pks`` that a BIGINT column can hold; anything else is no id."""
    return [int(pk) for pk in pks if pk.isdigit() and len(pk) < 19]


def _id(pk: str) -> int:
    ids = _ids([pk])
    if not ids:
        raise ValueError(pk)
    return ids[0]
