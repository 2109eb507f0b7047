"""What the stand-in says about a person in a context: LTI 1.1 launch parameters and the
claims of an LTI 1.3 ``LtiResourceLinkRequest``, built as Canvas builds them for a course
navigation placement of a tool whose privacy level is public."""

from __future__ import annotations

import base64
import hashlib
import uuid
from typing import Any

from .config import Course, DevCanvasConfig, User
from .lti13 import CLAIM, MESSAGE_TYPE, VERSION
from .pages import avatar_svg

__all__ = ["lti11_params", "lti13_claims"]

TOOL_TITLE = "Commons"
RETURN_PATH = "/external_content/success/external_tool_redirect"
LIS = "http://purl.imsglobal.org/vocab/lis/v2/"

_LTI11_ROLES = {
    "teacher": ("Instructor", "urn:lti:instrole:ims/lis/Instructor,urn:lti:role:ims/lis/Instructor"),
    "student": ("Learner", "urn:lti:instrole:ims/lis/Student,urn:lti:role:ims/lis/Learner"),
}
_LTI13_ROLES = {
    "teacher": [LIS + "institution/person#Instructor", LIS + "membership#Instructor"],
    "student": [LIS + "institution/person#Student", LIS + "membership#Learner"],
}


def avatar_url(config: DevCanvasConfig, user: User) -> str:
    """Canvas sends an https URL of the avatar. The stand-in serves plain HTTP, which the tool's
    pages would refuse to load (their CSP allows ``https:`` and ``data:`` images), so it sends
    the picture itself, as a ``data:`` URL."""
    svg = avatar_svg(user).encode("utf-8")
    return "data:image/svg+xml;base64," + base64.b64encode(svg).decode("ascii")


def _course_roles(config: DevCanvasConfig, user: User, course: Course) -> tuple[str, str]:
    role = course.role_of(user.id)
    roles, ext = _LTI11_ROLES[role] if role else ("", "")
    if user.admin:
        roles = ",".join(r for r in (roles, "urn:lti:instrole:ims/lis/Administrator") if r)
        ext = ",".join(r for r in (ext, "urn:lti:instrole:ims/lis/Administrator") if r)
    return roles, ",".join(r for r in (ext, "urn:lti:sysrole:ims/lis/User") if r)


def lti11_params(config: DevCanvasConfig, user: User, course: Course | None) -> dict[str, Any]:
    """The LTI 1.1 launch parameters (no ``oauth_*``) for ``user`` in ``course``, or in the
    root account when ``course`` is None (what ``accounts/self/jwt_token`` signs)."""
    params: dict[str, Any] = {}
    if course is not None:
        roles, ext_roles = _course_roles(config, user, course)
        params |= {
            "context_id": course.context_id,
            "context_label": course.course_code,
            "context_title": course.name,
            "custom_canvas_api_domain": config.api_domain,
            "custom_canvas_course_id": course.id,
            "custom_canvas_enrollment_state": "active",
        }
        return_url = (
            f"{config.canvas_url}/courses/{course.id}/external_content/success/external_tool_redirect"
        )
        resource_link_id = course.context_id
    else:
        roles = ext_roles = config.account_roles(user)
        account_context = hashlib.sha1(
            f"account:{config.guid}:{config.account_id}".encode(), usedforsecurity=False
        ).hexdigest()
        params |= {
            "context_id": account_context,
            "context_title": config.account_name,
            "custom_canvas_account_id": config.account_id,
            # Canvas leaves a variable it cannot expand as literal text: no SIS id here.
            "custom_canvas_account_sis_id": "$Canvas.account.sisSourceId",
            "custom_canvas_api_domain": config.api_domain,
        }
        return_url = f"{config.canvas_url}/accounts/{config.account_id}{RETURN_PATH}"
        resource_link_id = account_context
    params |= {
        "custom_canvas_user_id": user.id,
        "custom_canvas_user_login_id": user.login_id,
        "custom_canvas_workflow_state": "available",
        "ext_roles": ext_roles,
        "launch_presentation_document_target": "iframe",
        "launch_presentation_locale": "en",
        "launch_presentation_return_url": return_url,
        "lis_person_contact_email_primary": user.email,
        "lis_person_name_family": user.family_name,
        "lis_person_name_full": user.name,
        "lis_person_name_given": user.given_name,
        "lti_message_type": "basic-lti-launch-request",
        "lti_version": "LTI-1p0",
        "resource_link_id": resource_link_id,
        "resource_link_title": TOOL_TITLE,
        "roles": roles,
        "tool_consumer_info_product_family_code": "canvas",
        "tool_consumer_info_version": "cloud",
        "tool_consumer_instance_contact_email": config.contact_email,
        "tool_consumer_instance_guid": config.guid,
        "tool_consumer_instance_name": config.account_name,
        "user_id": user.lti_user_id,
        "user_image": avatar_url(config, user),
    }
    return dict(sorted(params.items()))


def lti13_claims(config: DevCanvasConfig, user: User, course: Course, *, now: int) -> dict[str, Any]:
    """An ``LtiResourceLinkRequest`` for ``user`` in ``course``, without ``nonce`` (Canvas
    builds the message at login initiation and adds the tool's nonce at authorization)."""
    role = course.role_of(user.id)
    roles = list(_LTI13_ROLES[role]) if role else []
    if user.admin:
        roles.append(LIS + "institution/person#Administrator")
    roles.append(LIS + "system/person#User")
    return {
        "iss": config.issuer,
        "aud": config.client_id,
        "azp": config.client_id,
        "sub": user.lti_id,
        "iat": now,
        "exp": now + 3600,  # Canvas: one hour
        CLAIM + "message_type": MESSAGE_TYPE,
        CLAIM + "version": VERSION,
        CLAIM + "deployment_id": config.deployment_id,
        CLAIM + "target_link_uri": config.target_link_uri,
        CLAIM + "resource_link": {"id": course.context_id, "title": TOOL_TITLE, "description": None},
        CLAIM + "roles": roles,
        CLAIM + "context": {
            "id": course.context_id,
            "label": course.course_code,
            "title": course.name,
            "type": [LIS + "course#CourseOffering"],
        },
        CLAIM + "tool_platform": {
            "guid": config.guid,
            "name": config.account_name,
            "version": "cloud",
            "product_family_code": "canvas",
        },
        CLAIM + "launch_presentation": {
            "document_target": "iframe",
            "return_url": f"{config.canvas_url}/courses/{course.id}{RETURN_PATH}",
            "locale": "en",
        },
        CLAIM + "custom": {
            "canvas_api_domain": config.api_domain,
            "canvas_course_id": course.id,
            "canvas_user_id": user.id,
            "canvas_user_login_id": user.login_id,
            "canvas_account_id": config.account_id,
        },
        CLAIM + "lti11_legacy_user_id": user.lti_user_id,
        CLAIM + "lti1p1": {"user_id": user.lti_user_id},
        "https://www.instructure.com/placement": "course_navigation",
        "errors": {"errors": {}},
        "name": user.name,
        "given_name": user.given_name,
        "family_name": user.family_name,
        "email": user.email,
        "picture": avatar_url(config, user),
        "locale": "en",
    }


def new_verifier() -> str:
    return uuid.uuid4().hex
