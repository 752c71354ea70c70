"""Errors a person can act on: every one carries a one-line message that says what is wrong and what to do."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class ZstcError(Exception):
    """A failure the command line reports as one line (no traceback) with a non-zero exit code."""

    exit_code = 1

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class InputError(ZstcError):
    """The input file or the options describing it are unusable (exit code 2, like a usage error)."""

    exit_code = 2


class AwsSetupError(ZstcError):
    """No credentials, no region, no stack, no permission: the AWS side is not reachable as configured."""

    exit_code = 3


class JobFailedError(ZstcError):
    """The transform job (or the file's processing) ended in failure."""

    exit_code = 4


class StillWaitingError(ZstcError):
    """The wait timed out; the work goes on in AWS and ``zstc wait FILE`` resumes."""

    exit_code = 5


def describe_aws_error(error: BaseException, *, region: str | None = None) -> str | None:
    """One actionable line for the AWS client errors every command can hit, or None if it is not one of them."""
    from botocore.exceptions import (
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        NoRegionError,
        PartialCredentialsError,
        TokenRetrievalError,
    )

    if isinstance(error, NoCredentialsError | PartialCredentialsError):
        return (
            "No AWS credentials found. Run `aws configure` (or `aws sso login`), or set AWS_PROFILE / "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY."
        )
    if isinstance(error, TokenRetrievalError):
        return "Your AWS SSO session has expired. Run `aws sso login` and try again."
    if isinstance(error, NoRegionError):
        return "No AWS region configured. Pass --region (e.g. --region us-east-1) or set AWS_REGION."
    if isinstance(error, EndpointConnectionError):
        return f"Cannot reach AWS ({error}). Check your network connection and the region ({region or 'not set'})."
    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        message = error.response.get("Error", {}).get("Message", "")
        if code in ("ExpiredToken", "ExpiredTokenException", "RequestExpired"):
            return "Your AWS credentials have expired. Refresh them (e.g. `aws sso login`) and try again."
        if code in ("InvalidClientTokenId", "UnrecognizedClientException", "SignatureDoesNotMatch"):
            return f"AWS rejected your credentials ({code}). Check AWS_PROFILE / your access keys."
        if code in ("AccessDenied", "AccessDeniedException", "403"):
            return f"Access denied: {message or code}. Use credentials allowed to use this stack's resources."
    return None


@contextmanager
def aws_errors(region: str | None = None) -> Iterator[None]:
    """Turn the common AWS client errors into :class:`AwsSetupError` with an actionable message."""
    try:
        yield
    except ZstcError:
        raise
    except Exception as error:
        message = describe_aws_error(error, region=region)
        if message is None:
            raise
        raise AwsSetupError(message) from error
