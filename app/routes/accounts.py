"""``/v1/accounts`` (wallets) and ``/v1/transactions``."""

from __future__ import annotations

from quart import Blueprint, g

from actors.account_messages import Deposit, Withdraw
from app.auth import merchant_required
from app.body import json_response, page_params, parse
from app.context import components
from app.idempotency import idempotent
from app.routes.payments import stored_method
from app.schemas import CreateAccount, CreateDeposit, CreateWithdrawal
from domain import render

bp = Blueprint("accounts", __name__)



@bp.post("/v1/accounts")
@merchant_required
@idempotent
async def create_account():
    body = await parse(CreateAccount)
    account = await components().accounts.create(g.merchant_id, body.customer_id, body.currency,
                                                 body.metadata or {})
    return json_response(account, 201)


@bp.get("/v1/accounts/<account_id>")
@merchant_required
async def get_account(account_id: str):
    return json_response(await components().accounts.get(g.merchant_id, account_id))


@bp.get("/v1/accounts")
@merchant_required
async def list_accounts():
    limit, after, filters = page_params(extra_filters=("customer_id",))
    items, more = await components().accounts.list_page(g.merchant_id, limit=limit,
                                                        starting_after=after, customer_id=filters["customer_id"])
    return json_response(render.page(items, more))


@bp.post("/v1/accounts/<account_id>/deposits")
@merchant_required
@idempotent
async def create_deposit(account_id: str):
    body = await parse(CreateDeposit)
    method = stored_method(body.payment_method)
    # Check the account exists (and is this merchant's) before starting an actor for it.
    await components().accounts.check_exists(g.merchant_id, account_id)
    transaction = await components().accounts.ask(account_id, Deposit(g.merchant_id, body.amount, method))
    return json_response(transaction, 201)


@bp.post("/v1/accounts/<account_id>/withdrawals")
@merchant_required
@idempotent
async def create_withdrawal(account_id: str):
    body = await parse(CreateWithdrawal)
    await components().accounts.check_exists(g.merchant_id, account_id)
    transaction = await components().accounts.ask(account_id, Withdraw(g.merchant_id, body.amount))
    return json_response(transaction, 201)


@bp.get("/v1/accounts/<account_id>/transactions")
@merchant_required
async def list_transactions(account_id: str):
    limit, after, filters = page_params(extra_filters=("type", "status"))
    items, more = await components().accounts.list_transactions(g.merchant_id, account_id,
                                                                limit=limit, starting_after=after, filters=filters)
    return json_response(render.page(items, more))


@bp.get("/v1/transactions/<transaction_id>")
@merchant_required
async def get_transaction(transaction_id: str):
    return json_response(await components().accounts.get_transaction(g.merchant_id, transaction_id))
