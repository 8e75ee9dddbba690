"""The blueprints: thin triggers that load, call one function of shared/sync or shared/store, and return.

Module level imports only azure.functions and the standard library (cold start); the rest is imported
inside the function bodies through `shared.runtime.services()`.
"""
