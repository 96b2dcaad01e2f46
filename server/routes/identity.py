"""The admin's side of device identity: reset a device's key (audited), read the device
audit, and make, list and revoke limited enrollment tokens. Admin only."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from server.api_models import DeviceAuditEntry, EnrollmentTokenInfo, IssuedEnrollmentToken
from server.auth import Principal, Role, require_role
from server.deps import SessionDep
from server.errors import NotFoundError
from server.input_bounds import NameInPath
from server.schemas import DeviceResetIn, EnrollmentTokenIn
from server.services.enrollment import device_audit, reset_device
from server.services.enrollment_tokens import (
    create_enrollment_token,
    list_enrollment_tokens,
    revoke_enrollment_token,
)
from wire.paths import (
    ENROLLMENT_TOKENS_PATH,
    device_audit_path,
    device_reset_path,
    enrollment_token_path,
)

router = APIRouter(tags=["identity"])

Admin = Annotated[Principal, Depends(require_role(Role.ADMIN))]


@router.post(device_reset_path("{device_id}"), response_model=DeviceAuditEntry)
def post_reset(
    device_id: NameInPath, body: DeviceResetIn, session: SessionDep, admin: Admin
) -> DeviceAuditEntry:
    return reset_device(session, device_id, body.reason, f"{admin.role.value}:{admin.subject}")


@router.get(device_audit_path("{device_id}"), response_model=list[DeviceAuditEntry])
def get_audit(device_id: NameInPath, session: SessionDep, _: Admin) -> list[DeviceAuditEntry]:
    return device_audit(session, device_id)


@router.post(ENROLLMENT_TOKENS_PATH, status_code=201, response_model=IssuedEnrollmentToken)
def post_enrollment_token(
    body: EnrollmentTokenIn, session: SessionDep, admin: Admin
) -> IssuedEnrollmentToken:
    return create_enrollment_token(session, body, f"{admin.role.value}:{admin.subject}")


@router.get(ENROLLMENT_TOKENS_PATH, response_model=list[EnrollmentTokenInfo])
def get_enrollment_tokens(session: SessionDep, _: Admin) -> list[EnrollmentTokenInfo]:
    return list_enrollment_tokens(session)


@router.delete(enrollment_token_path("{name}"), response_model=EnrollmentTokenInfo)
def delete_enrollment_token(name: NameInPath, session: SessionDep, _: Admin) -> EnrollmentTokenInfo:
    revoked = revoke_enrollment_token(session, name)
    if revoked is None:
        raise NotFoundError(f"no active enrollment token named {name!r}")
    return revoked
