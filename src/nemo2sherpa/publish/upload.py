"""Upload a planned repository tree to the Hugging Face Hub in one commit, through huggingface_hub.

huggingface_hub does the hard parts the way Hub users expect: the token is resolved from HF_TOKEN or the saved
login (this module never reads, prints or stores it), the Hub decides per file between a regular blob and large-file
storage (Xet when hf_xet is installed, else Git LFS with multipart uploads), files already on the Hub are skipped,
so a re-run after an interruption sends only what is missing, and progress bars show each large file.

Every failure the user can act on comes back as a one-line UserError naming the repository; nothing from the
exception that could echo a header (and so the token) is repeated.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

from nemo2sherpa.errors import UserError
from nemo2sherpa.progress import Progress
from nemo2sherpa.publish.plan import RepoFile

NOT_AUTHORIZED = "not authorized: set HF_TOKEN or run `hf auth login`"
MAIN = "main"


@dataclass(frozen=True)
class UploadTarget:
    repo_id: str
    revision: str = MAIN
    private: bool = False
    endpoint: str | None = None  # None: huggingface_hub's own (HF_ENDPOINT, else huggingface.co)


@dataclass(frozen=True)
class Uploaded:
    url: str  # the repository's page (at the branch when not main)
    commit_url: str
    commit_oid: str


def upload(files: list[RepoFile], target: UploadTarget, commit_message: str, commit_description: str = "",
           progress: Progress | None = None, progress_bars: bool = True) -> Uploaded:
    """create_repo (exist_ok) -> [create_branch] -> one create_commit with every file."""
    from huggingface_hub import CommitOperationAdd, HfApi, get_token

    progress = progress or Progress()
    if not get_token():
        raise UserError(f"{target.repo_id}: no Hugging Face token: set HF_TOKEN or run `hf auth login`")
    api = HfApi(endpoint=target.endpoint)
    with _hub_errors(target), _progress_bars(progress_bars):
        with progress.stage(f"create repository {target.repo_id}"):
            repo_url = api.create_repo(target.repo_id, repo_type="model", private=target.private, exist_ok=True)
            if target.private:
                _refuse_public(api, target)
            if target.revision != MAIN:
                api.create_branch(target.repo_id, branch=target.revision, repo_type="model", exist_ok=True)
        operations = [_operation(CommitOperationAdd, item) for item in files]
        total = sum(item.size for item in files)
        with progress.stage(f"upload {len(files)} files ({total / 1e6:.1f} MB) to {target.repo_id}@{target.revision}"):
            commit = api.create_commit(target.repo_id, operations, commit_message=commit_message,
                                       commit_description=commit_description, repo_type="model",
                                       revision=target.revision)
    url = str(repo_url).rstrip("/")
    if target.revision != MAIN:
        url += f"/tree/{target.revision}"
    return Uploaded(url=url, commit_url=str(commit.commit_url), commit_oid=str(commit.oid))


def _operation(operation_class, item: RepoFile):
    operation = operation_class(path_in_repo=item.path_in_repo,
                                path_or_fileobj=item.content if item.content is not None else str(item.local))
    if item.sha256 and not getattr(operation.upload_info, "is_hashed", True):  # hashed lazily (recent hub)
        # Verified against the manifest moments ago: no need to read multi-GB weights a second time.
        operation.upload_info.sha256 = bytes.fromhex(item.sha256)
    return operation


def _refuse_public(api, target: UploadTarget) -> None:
    """create_repo ignores `private` for an existing repository: never upload into a public one by surprise."""
    info = api.model_info(target.repo_id)
    if not getattr(info, "private", False):
        raise UserError(f"{target.repo_id}: --private was given but the repository already exists and is public; "
                        "make it private on the Hub first, or drop --private")


@contextlib.contextmanager
def _progress_bars(enabled: bool) -> Iterator[None]:
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    if not enabled and not was_disabled:
        disable_progress_bars()
    try:
        yield
    finally:
        if not enabled and not was_disabled:
            enable_progress_bars()


@contextlib.contextmanager
def _hub_errors(target: UploadTarget) -> Iterator[None]:
    """Turn what huggingface_hub raises into one-line UserErrors; bugs keep their traceback."""
    from huggingface_hub.errors import (
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    repo = target.repo_id
    try:
        yield
    except UserError:
        raise
    except OfflineModeIsEnabled:
        raise UserError(f"{repo}: HF_HUB_OFFLINE is set, and publishing needs the Hub; unset it, or use --dry-run") \
            from None
    except RevisionNotFoundError:
        raise UserError(f"{repo}: revision {target.revision!r} not found, and it could not be created") from None
    except RepositoryNotFoundError as exc:
        if _status(exc) == 401:
            raise UserError(f"{repo}: {NOT_AUTHORIZED}") from None
        raise UserError(f"{repo}: no such repository, or the token cannot see it") from None
    except HfHubHTTPError as exc:
        raise UserError(_scrub(f"{repo}: {_http_problem(exc, target)}")) from None
    except RuntimeError as exc:  # huggingface_hub wraps a failed large-file upload: "Error while uploading 'x'"
        cause = exc.__cause__
        if isinstance(cause, HfHubHTTPError):
            raise UserError(_scrub(f"{repo}: {exc} {_http_problem(cause, target)}")) from None
        if cause is not None and _is_transport_error(cause):
            raise UserError(_scrub(f"{repo}: {exc} (network: {type(cause).__name__})")) from None
        raise
    except ValueError as exc:
        text = str(exc)
        if text.startswith(("Invalid metadata in README.md", "LFS batch API returned errors")):
            raise UserError(_scrub(f"{repo}: the Hub refused the upload: {text}")) from None
        raise
    except Exception as exc:
        if _is_transport_error(exc):
            from huggingface_hub import constants

            where = target.endpoint or constants.ENDPOINT
            raise UserError(f"{repo}: cannot reach {where} ({type(exc).__name__}); check the network "
                            "(files already uploaded are not sent again on the next run)") from None
        raise


def _status(exc) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _http_problem(exc, target: UploadTarget) -> str:
    status = _status(exc)
    if status == 401:
        return NOT_AUTHORIZED
    if status == 403:
        return ("forbidden: the token cannot write here (it needs write access, and membership of the "
                "organisation that owns the repository)")
    if status == 409:
        return f"conflict on the Hub (someone else committed to {target.revision}?); run again"
    if status == 413:
        return "the Hub refused a file as too large"
    if status == 429:
        return "rate-limited by the Hub; wait and run again (files already uploaded are not sent again)"
    if status is not None and status >= 500:
        return f"the Hub failed (HTTP {status}); run again later (files already uploaded are not sent again)"
    message = (getattr(exc, "server_message", None) or "").strip()
    detail = f": {message[:300]}" if message else ""
    return f"the Hub refused the request (HTTP {status}){detail}"


def _is_transport_error(exc: BaseException) -> bool:
    """Connection problems, whatever HTTP library this huggingface_hub uses (requests, httpx, httpx2)."""
    module = type(exc).__module__.split(".")[0]
    return module in ("httpx", "httpx2", "httpcore", "httpcore2", "requests", "urllib3") or \
        isinstance(exc, (ConnectionError, TimeoutError))


def _scrub(message: str) -> str:
    """Belt and braces: a server that echoes the token in an error message must not make us print it."""
    try:
        from huggingface_hub import get_token

        token = get_token()
    except Exception:  # noqa: BLE001 - no token resolution failure may hide the original error
        token = None
    return message.replace(token, "***") if token else message
