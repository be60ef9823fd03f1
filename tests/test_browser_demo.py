"""The browser demo (clients/web/, on the JavaScript library clients/js/) in a real Chromium,
against real services: a GameServer and one or two Gateways (``system_factory``), the page
served by ``python -m test_client web`` (a subprocess), driven by Playwright.

Chromium is the system's (``apt-get install chromium``; ``.ci/run`` installs it), launched
headless by Playwright through ``executable_path`` — Playwright's own browser download is
never used. Without Playwright or a Chromium the tests skip, saying which is missing;
``GB_TEST_CHROMIUM`` names another Chromium-like binary.

Everything is read from the page's DOM (stable ids: #status, #session, #pos, #moves, #rtt,
#whispers, #kick, #snapshot, #history, #log), and every wait is Playwright's
``expect(...)``, which polls until its timeout: no fixed sleeps. A screenshot taken after
the moves goes to artifacts/screenshots/ at the repository root (CI keeps that directory).
An uncaught exception in a page fails its test.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest

from tests.support.cluster import Cluster
from tests.support.processes import REPO_ROOT
from tests.support.users import new_user_id
from tests.support.web_demo import WebDemoServer

try:
    from playwright.async_api import (
        Browser,
        BrowserContext,
        ConsoleMessage,
        Error,
        Page,
        async_playwright,
        expect,
    )
except ImportError:  # pragma: no cover - depends on the environment
    pytest.skip("the browser tests need Playwright for Python (pip install -e '.[dev]')",
                allow_module_level=True)

#: How long any one condition in a page may take (a reconnect through a draining Gateway is
#: the slowest: its grace, GATEWAY_DRAIN_GRACE_S = 0.5 s in tests, then the RECONNECT).
TIMEOUT_MS = 15_000

SCREENSHOTS = REPO_ROOT / "artifacts" / "screenshots"

SystemFactory = Callable[..., Cluster]


def chromium_executable() -> str | None:
    """``GB_TEST_CHROMIUM``, else the first of chromium, chromium-browser, google-chrome."""
    named = os.environ.get("GB_TEST_CHROMIUM")
    if named:
        return shutil.which(named) or (named if Path(named).is_file() else None)
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDemoServer]:
    """``python -m test_client web`` on a port of its own choosing, for the module."""
    server = WebDemoServer(tmp_path_factory.mktemp("web-demo")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    executable = chromium_executable()
    if executable is None:
        pytest.skip("the browser tests need Chromium: apt-get install chromium (or set "
                    "GB_TEST_CHROMIUM to a Chromium binary)")
    async with async_playwright() as playwright:
        # chromium_sandbox=False (Playwright's default, said out loud): --no-sandbox, which
        # Chromium needs when it runs as root, as CI does.
        launched = await playwright.chromium.launch(
            executable_path=executable, headless=True, chromium_sandbox=False)
        try:
            yield launched
        finally:
            await launched.close()


class DemoPages:
    """Opens demo pages, each in a browser context of its own (its own storage, like another
    player's browser); records their console and uncaught errors."""

    def __init__(self, browser: Browser, web: WebDemoServer) -> None:
        self.browser = browser
        self.web = web
        self.contexts: list[BrowserContext] = []
        self.console: list[str] = []
        self.errors: list[str] = []

    async def open(self, user_id: int | None, gateways: list[str], *,
                   autologin: bool = True, name: str = "") -> Page:
        context = await self.browser.new_context(viewport={"width": 1100, "height": 900})
        self.contexts.append(context)
        page = await context.new_page()
        label = name or f"user {user_id}"

        def on_console(message: ConsoleMessage) -> None:
            self.console.append(f"[{label}] {message.type}: {message.text}")

        def on_error(error: Error) -> None:
            self.errors.append(f"[{label}] {error}")

        page.on("console", on_console)
        page.on("pageerror", on_error)
        query: dict[str, str] = {}
        if gateways:
            query["gateway"] = ",".join(gateways)
        if user_id is not None:
            query["user"] = str(user_id)
        if autologin:
            query["autologin"] = "1"
        await page.goto(f"{self.web.url}?{urlencode(query)}")
        return page

    def check(self) -> None:
        """No uncaught exception in any page (call at the end of a test)."""
        assert not self.errors, "uncaught errors in the page:\n" + "\n".join(self.errors)

    async def close(self) -> None:
        for context in self.contexts:
            await context.close()
        if self.console:
            print("browser console:\n" + "\n".join(self.console))  # shown when a test fails


@pytest.fixture
async def pages(browser: Browser, web: WebDemoServer) -> AsyncIterator[DemoPages]:
    opened = DemoPages(browser, web)
    try:
        yield opened
    finally:
        await opened.close()


async def expect_online(page: Page) -> str:
    """Wait for the page to be logged in; returns the session id it shows."""
    await expect(page.locator("#status")).to_have_text("online", timeout=TIMEOUT_MS)
    await expect(page.locator("#session")).to_have_text(re.compile(r"^\d+$"),
                                                        timeout=TIMEOUT_MS)
    return await page.locator("#session").inner_text()


async def press(page: Page, *keys: str) -> None:
    """Arrow keys on the canvas (focused by a click, as a player would)."""
    await page.locator("#arena").click()
    for key in keys:
        await page.keyboard.press(key)


async def expect_position(page: Page, pos: str, moves: int) -> None:
    await expect(page.locator("#pos")).to_have_text(pos, timeout=TIMEOUT_MS)
    await expect(page.locator("#moves")).to_have_text(str(moves), timeout=TIMEOUT_MS)


async def screenshot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


# ----------------------------------------------------------------------------- tests


async def test_the_form_is_preset_from_the_url_and_the_page_host(pages: DemoPages) -> None:
    default = await pages.open(None, [], autologin=False, name="no parameters")
    await expect(default.locator("#status")).to_have_text("offline", timeout=TIMEOUT_MS)
    await expect(default.locator("#gateway")).to_have_value("ws://127.0.0.1:5080/")
    preset = await pages.open(42, ["ws://127.0.0.1:1/", "ws://127.0.0.1:2/"], autologin=False)
    await expect(preset.locator("#gateway")).to_have_value("ws://127.0.0.1:1/,ws://127.0.0.1:2/")
    await expect(preset.locator("#user")).to_have_value("42")
    await expect(preset.locator("#status")).to_have_text("offline")
    # No Gateway there: the login fails, says so, and the page is offline again.
    nowhere = await pages.open(43, ["ws://127.0.0.1:1/"], name="no Gateway")
    await expect(nowhere.locator("#error")).to_have_text(re.compile(r"\S"), timeout=TIMEOUT_MS)
    await expect(nowhere.locator("#history")).to_have_text("offline → connecting → offline")
    pages.check()


async def test_login_arrow_key_moves_ping_and_logout(
        system_factory: SystemFactory, pages: DemoPages) -> None:
    cluster = system_factory()
    user = new_user_id()
    page = await pages.open(user, [cluster.gateway.ws_url])
    await expect_online(page)
    await expect(page.locator("#user-shown")).to_have_text(str(user))
    await expect_position(page, "0,0", 0)  # a new player

    await press(page, "ArrowRight", "ArrowRight", "ArrowRight", "ArrowUp", "ArrowUp",
                "ArrowLeft")
    await expect_position(page, "2,2", 6)
    await screenshot(page, "browser-demo-moves")

    await page.locator("#ping").click()
    await expect(page.locator("#rtt")).to_have_text(re.compile(r"^\d+(\.\d+)? ms$"),
                                                    timeout=TIMEOUT_MS)

    await page.locator("#logout").click()
    await expect(page.locator("#status")).to_have_text("offline", timeout=TIMEOUT_MS)
    await expect(page.locator("#log")).to_contain_text("logged out")

    # The state belongs to the user: a new login (the Login button) starts where it was.
    await page.locator("#login").click()
    await expect_online(page)
    await expect_position(page, "2,2", 6)
    await press(page, "ArrowDown")
    await expect_position(page, "2,1", 7)
    pages.check()


async def test_a_whisper_from_one_page_is_listed_in_the_other(
        system_factory: SystemFactory, pages: DemoPages) -> None:
    cluster = system_factory()
    alice, bob = new_user_id(), new_user_id()
    page_a = await pages.open(alice, [cluster.gateway.ws_url])
    page_b = await pages.open(bob, [cluster.gateway.ws_url])
    await expect_online(page_a)
    await expect_online(page_b)

    await page_a.locator("#whisper-to").fill(str(bob))
    await page_a.locator("#whisper-text").fill("hello from A ✓")
    await page_a.locator("#whisper-send").click()
    await expect(page_a.locator("#whisper-result")).to_have_text("delivered", timeout=TIMEOUT_MS)
    await expect(page_b.locator("#whispers li")).to_have_text(
        [f"{alice}: hello from A ✓"], timeout=TIMEOUT_MS)
    await expect(page_b.locator("#whispers li")).to_have_attribute("data-from", str(alice))
    await expect(page_a.locator("#whispers li")).to_have_count(0)
    pages.check()


async def test_a_gateway_drain_is_resumed_on_the_other_gateway_with_the_same_state(
        system_factory: SystemFactory, pages: DemoPages) -> None:
    cluster = system_factory(gateways=2)
    first, second = cluster.gateways
    user = new_user_id()
    page = await pages.open(user, [first.ws_url, second.ws_url])
    session = await expect_online(page)
    await press(page, "ArrowRight", "ArrowRight", "ArrowUp")
    await expect_position(page, "2,1", 3)
    assert first.process.metric("gateway_ws_upgrades_total") == 1
    assert second.process.metric("gateway_ws_upgrades_total") == 0

    # SIGTERM: the Gateway sends KICKOUT_NTF SERVER_SHUTDOWN, closes after its drain grace,
    # exits. The library moves to the next Gateway and RECONNECTs.
    first.terminate()

    await expect(page.locator("#kick")).to_have_text("SERVER_SHUTDOWN", timeout=TIMEOUT_MS)
    await expect(page.locator("#reconnects")).to_have_text("1", timeout=TIMEOUT_MS)
    await expect(page.locator("#status")).to_have_text("online", timeout=TIMEOUT_MS)
    await expect(page.locator("#history")).to_have_text(
        re.compile(r"online → reconnecting → online$"))
    await expect(page.locator("#session")).to_have_text(session)  # the same session
    await expect(page.locator("#snapshot")).to_have_text(re.compile(r"^x=2 y=1 moves=3 "))
    await expect_position(page, "2,1", 3)
    assert second.process.metric("gateway_ws_upgrades_total") >= 1

    # The count goes on from the snapshot, on the second Gateway.
    await press(page, "ArrowDown")
    await expect_position(page, "2,0", 4)
    await screenshot(page, "browser-demo-resumed")
    pages.check()


async def test_a_second_login_of_the_same_user_kicks_the_first_page(
        system_factory: SystemFactory, pages: DemoPages) -> None:
    cluster = system_factory()
    user = new_user_id()
    page_1 = await pages.open(user, [cluster.gateway.ws_url], name="first tab")
    first_session = await expect_online(page_1)
    await press(page_1, "ArrowUp")
    await expect_position(page_1, "0,1", 1)

    page_2 = await pages.open(user, [cluster.gateway.ws_url], name="second tab")
    second_session = await expect_online(page_2)
    assert second_session != first_session

    await expect(page_1.locator("#kick")).to_have_text("DUPLICATE_LOGIN", timeout=TIMEOUT_MS)
    await expect(page_1.locator("#status")).to_have_text("kicked", timeout=TIMEOUT_MS)
    await expect(page_2.locator("#kick")).to_have_text("none")
    await expect_position(page_2, "0,1", 1)  # the state is the user's, not the session's
    await expect(page_1.locator("#history")).to_have_text(re.compile(r"online → kicked$"))
    pages.check()
