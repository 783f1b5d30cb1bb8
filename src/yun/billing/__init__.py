"""Prices (versioned), credits, free quotas, the reserve/settle money path, statements."""

from yun.billing.pricing import NANO, Charge, charge, dollars, nanodollars
from yun.billing.service import BillingService, Estimate, Outcome
from yun.store.money import HoldRecord as Hold

__all__ = ["NANO", "BillingService", "Hold", "Charge", "Estimate", "Outcome", "charge", "dollars", "nanodollars"]
