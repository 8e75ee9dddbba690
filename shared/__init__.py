"""The co-sell connector: Partner Center referrals <-> Salesforce Opportunities."""
