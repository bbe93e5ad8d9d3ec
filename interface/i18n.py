"""The interface in English and Chinese.

Texts are written in English at their call sites; the English text is also the translation key,
so a text missing from ZH simply shows in English. Two ways a text reaches the reader:

- `localized(text)`: a component's label, hint, placeholder, button or Markdown. Gradio's
  frontend picks the language (`I18N`, passed to `launch`): the browser's, or the one chosen with
  the switch in the header (LANGUAGE_SCRIPT).
- `translate(text)`: a message the server writes while it handles an event (gr.Info, gr.Warning,
  gr.Error, a Markdown update), in the language of the request: the switch's choice (sent by the
  page script as a header, else as a cookie), else the browser's Accept-Language.

Texts with values (`{count}`) are formatted in both languages. The model's answers, the names of
API parameters and the backend's error messages (but for a few frequent refusals in ZH) are never
translated.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from functools import cache

import gradio as gr
from gradio.context import LocalContext
from gradio.i18n import I18nData
from starlette.requests import cookie_parser

LANGUAGE_COOKIE = "internvl-demo-language"  # also the localStorage key; the locale, e.g. zh-CN
LANGUAGE_HEADER = "x-internvl-language"  # the same choice, added by the page script to its requests
SWITCH_TEXT = "中文"  # the switch names the other language: "中文" in English, "English" in Chinese

# English text -> Chinese. Keep texts free of `{`/`}` other than format fields, and of HTML:
# the frontend formats them as ICU messages.
ZH: dict[str, str] = {
    SWITCH_TEXT: "English",
    # the page
    "Model": "模型",
    "Model: `{model}`{details}": "模型：`{model}`{details}",
    (
        "⚠️ **This checkpoint has random weights** (written by `python -m"
        " model_backend.tiny`): everything works, but the answers are noise. Start the app"
        " with a real model, for example `python app.py --model"
        " OpenGVLab/InternVL2_5-2B-MPO-hf`."
    ): (
        "⚠️ **此检查点的权重是随机的**（由 `python -m model_backend.tiny` 生成）：所有功"
        "能都能用，但回答毫无意义。请用真实模型启动，例如"
        " `python app.py --model OpenGVLab/InternVL2_5-2B-MPO-hf`。"
    ),
    (
        "🗳️ **Votes are kept on this server.** When you vote in the Compare tab, or like one of two"
        " answers to a question (after Regenerate), the question, both answers and the images or"
        " video they concern are saved on this server (in `{folder}`) as preference data for"
        " training models. Nothing is kept for answers you do not vote on."
    ): (
        "🗳️ **投票会保存在此服务器上。**当你在「对比」页投票，或在同一问题的两个回答中点"
        "赞其一（重新生成之后）时，问题、两个回答及其涉及的图像或视频会作为训练模型用的偏"
        "好数据保存在此服务器上（`{folder}`）。未投票的回答不会保存。"
    ),
    "Loading {model} (it may take a few minutes the first time)…": (
        "正在加载 {model}（首次加载可能需要几分钟）……"
    ),
    # tabs
    "Image chat": "图像对话",
    "Multi-image chat": "多图对话",
    "Document chat": "文档对话",
    "Video chat": "视频对话",
    "Grounding": "目标定位",
    "Compare": "对比",
    # the chat panel
    "Conversation": "对话",
    "Question": "问题",
    "Ask a question and press Enter": "输入问题后按回车",
    "Stop": "停止",
    "Regenerate": "重新生成",
    "Undo": "撤销",
    "Clear": "清空",
    "Export chat": "导出对话",
    "Download chat (JSON)": "下载对话（JSON）",
    "Download chat (Markdown)": "下载对话（Markdown）",
    "There is no answer to regenerate yet.": "还没有可以重新生成的回答。",
    "There is nothing to export yet: ask a question first.": "还没有可导出的内容：请先提问。",
    (
        "Your choice is marked, but not kept as a preference pair: this conversation was "
        "restored from the browser's history, so its earlier answers or its images and "
        "videos are not the ones the model had here."
    ): (
        "已标记你的选择，但不会保存为偏好数据对：此对话是从浏览器历史记录中恢复的，其早先"
        "的回答或图像、视频并不是模型在此处看到的那些。"
    ),
    "Please add an image first (upload, paste or webcam).": (
        "请先添加一张图像（上传、粘贴或摄像头）。"
    ),
    "Please add a video first.": "请先添加一个视频。",
    "Please add a PDF document first.": "请先添加一个 PDF 文档。",
    "Please type a question.": "请输入问题。",
    (
        "You already have {jobs} requests waiting for or running on the model, the most one"
        " client may have ({per_session} per session, {per_address} per address). Wait for one"
        " to finish or cancel one, then try again."
    ): (
        "你已有 {jobs} 个请求在等待或正在使用模型，这是每个客户端的上限"
        "（每个会话 {per_session} 个，每个地址 {per_address} 个）。"
        "请等其中一个完成或取消一个后再试。"
    ),
    "Stopped: nobody read this answer for {seconds} s, and others were waiting for the model.": (
        "已停止：这个回答已有 {seconds} 秒无人读取，而其他人正在等待模型。"
    ),
    (
        "This conversation is too large to export: about {needed} MB with its images, and exports"
        " may take {budget} MB."
    ): "此对话太大，无法导出：连同图像约 {needed} MB，而导出最多只能占用 {budget} MB。",
    "There is no question to keep with this preference.": "没有可与此偏好一起保存的问题。",
    "Both answers must have text for a preference to be kept.": (
        "两个回答都必须有文字才能保存偏好。"
    ),
    "Both answers are the same, so there is no preference to keep.": (
        "两个回答相同，因此没有可保存的偏好。"
    ),
    (
        "The file {name} is no longer available, so the preference cannot be kept with it."
        " Please attach it again."
    ): "文件 {name} 已不可用，无法与偏好一起保存。请重新附上它。",
    "Examples (click one, then press Enter)": "示例（点击一个，然后按回车）",
    "Examples (Find mode: click one, then press Enter)": "示例（查找模式：点击一个，然后按回车）",
    "Image": "图像",
    # settings
    "Reason step by step": "逐步推理",
    (
        "InternVL 2.5: the MPO chain-of-thought prompt, the final answer highlighted; "
        "InternVL3.5: its thinking mode (temperature {temperature} advised)"
    ): (
        "InternVL 2.5：MPO 思维链提示，突出显示最终答案；"
        "InternVL3.5：其思考模式（建议温度 {temperature}）"
    ),
    "Answer style": "回答风格",
    "Default": "默认",
    "Yes/No": "是/否",
    "Multiple choice": "选择题",
    "Short": "简短",
    "Detailed": "详细",
    "Settings": "设置",
    "System prompt": "系统提示词",
    "Temperature (0 = greedy)": "温度（0 = 贪心解码）",
    "Top-p": "Top-p",
    "Top-k (0 = off)": "Top-k（0 = 关闭）",
    "Repetition penalty": "重复惩罚",
    "Max new tokens": "最大生成词元数",
    "Max tiles per image": "每张图像的最大切块数",
    # history
    "History (kept in this browser)": "历史记录（保存在此浏览器中）",
    "History (kept in this browser) · {count}": "历史记录（保存在此浏览器中）· {count}",
    "Saved conversations, newest first: click one to restore it": (
        "已保存的对话，最新的在前：点击即可恢复"
    ),
    "No saved conversation yet: each one is saved here when an answer completes.": (
        "还没有已保存的对话：每当一个回答完成，对话就会保存在这里。"
    ),
    "{count} saved": "已保存 {count} 个",
    "Delete selected": "删除所选",
    "Restored from this browser:": "已从此浏览器恢复：",
    "(saved {time})": "（保存于 {time}）",
    "Its oldest turns were left out: the conversation was too long to keep.": (
        "最早的几轮已省略：对话太长，无法全部保存。"
    ),
    (
        "⚠️ Its images and videos were not kept, only these thumbnails. Attach the original files"
        " again ({names}) to ask about them: until then the model sees the text of the"
        " conversation only."
    ): (
        "⚠️ 其中的图像和视频没有保存，只保留了这些缩略图。要就它们提问，请重新附上原始文件"
        "（{names}）：在此之前，模型只能看到对话的文字。"
    ),
    "Delete all": "全部删除",
    (
        "Saved in this browser only (nothing on the server), with small thumbnails instead of"
        " the images and videos: attach the files again to continue."
    ): "只保存在此浏览器中（服务器上没有），图像和视频只保留小缩略图：要继续对话，请重新附上文件。",
    "Wait for the answer to finish (or press Stop) before restoring a conversation.": (
        "请等回答完成（或按停止）后再恢复对话。"
    ),
    # image chat
    "**Image chat** · add an image on the left, then ask about it.": (
        "**图像对话** · 在左侧添加一张图像，然后就它提问。"
    ),
    # multi-image chat
    "Images in this conversation": "此对话中的图像",
    "Attach images to the question (you can select several at once).": (
        "给问题附上图像（可以一次选择多张）。"
    ),
    (
        "**This message:** {count} image(s) → {tiles} tiles → **{tokens} image tokens** (up to"
        " {per_image} tiles each; earlier images then count 1 tile each)."
    ): (
        "**本条消息：**{count} 张图像 → {tiles} 块 → **{tokens} 个图像词元**"
        "（每张最多 {per_image} 块；之后较早的图像各算 1 块）。"
    ),
    (
        "This conversation would hold {total} images; the limit is {max_images}. Remove some"
        " before sending, or press Clear to start a new conversation."
    ): (
        "此对话将包含 {total} 张图像，上限为 {max_images} 张。请在发送前移除一些，"
        "或按清空开始新的对话。"
    ),
    (
        "**Multi-image chat** · attach several images to a question (📎"
        "), then refer to them as Image-1, Image-2, … (up to {max_images} per conversation)."
    ): (
        "**多图对话** · 给问题附上多张图像（📎），然后用 Image-1、Image-2……指代它们（每个"
        "对话最多 {max_images} 张）。"
    ),
    # document chat
    "PDF document": "PDF 文档",
    "Pages": "页码",
    "e.g. 1-3, 5 (empty: the first {count})": "例如 1-3, 5（留空：前 {count} 页）",
    "Pages sent with the question": "随问题发送的页面",
    "Upload a PDF.": "请上传 PDF。",
    "{count} page": "{count} 页",
    "{count} pages": "{count} 页",
    "**{name}**: {pages} · sending {count} (up to {per_page} tiles each) → {tiles} tiles.": (
        "**{name}**：{pages} · 发送 {count} 页（每页最多 {per_page} 块）→ 共 {tiles} 块。"
    ),
    "Pages like `1-3, 5` (empty: the first {count}). Limits: {limits}.": (
        "页码写法如 `1-3, 5`（留空：前 {count} 页）。限制：{limits}。"
    ),
    (
        "up to {per_question} pages per question, documents of up to {pages} pages and "
        "{megabytes} MB"
    ): ("每个问题最多 {per_question} 页，文档最多 {pages} 页、{megabytes} MB"),
    (
        "**Document chat** ·"
        " add a PDF, choose the pages, then ask about them; the model sees them as Page-1, Page-2, "
        "… ({limits})."
    ): (
        "**文档对话** · 添加 PDF，选择页面，然后就这些页面提问；模型看到的是 Page-1、"
        "Page-2……（{limits}）。"
    ),
    # video chat
    "Video": "视频",
    "Frames": "帧数",
    "Tiles per frame": "每帧切块数",
    "Start (s)": "开始（秒）",
    "End (s, 0 = the end)": "结束（秒，0 = 结尾）",
    "Frames the model sees": "模型看到的帧",
    (
        "The video tab takes one video per message, not images: use the Image or Multi-image tab"
        " for pictures."
    ): "视频页每条消息只接受一个视频，不接受图像：图片请使用图像对话或多图对话页。",
    (
        "**Video chat** · add a video (mp4, webm, mov, mkv, avi or GIF), check the sampled frames,"
        " then ask about it."
    ): (
        "**视频对话** · 添加一个视频（mp4、webm、mov、mkv、avi 或 GIF），查看采样的帧，然"
        "后就它提问。"
    ),
    # grounding
    "Mode": "模式",
    "Find": "查找",
    "Detect all": "检测全部",
    "Ask": "提问",
    (
        "Find: type what to look for · Detect all: just press Enter ·"
        " Ask: any question (boxes are drawn if the answer has some)"
    ): ("查找：输入要找的东西 · 检测全部：直接按回车 · 提问：任何问题（回答中有框时会画出来）"),
    "Boxes": "框",
    "Boxes (pixels)": "框（像素）",
    "Boxes as JSON": "框（JSON）",
    "**Grounding** · add an image, pick a mode, say what to find.": (
        "**目标定位** · 添加一张图像，选择模式，说出要找什么。"
    ),
    # compare
    "Left model": "左侧模型",
    "Right model": "右侧模型",
    "Left answer": "左侧回答",
    "Right answer": "右侧回答",
    "Images": "图像",
    "Or a video": "或一个视频",
    "Ask both sides a question and press Enter": "向两侧提同一个问题后按回车",
    "Both answers stream at the same time.": "两个回答同时生成。",
    (
        "This backend generates one answer at a time: the right answer starts as soon as the "
        "left one ends."
    ): ("此后端一次只生成一个回答：左侧回答结束后右侧回答立即开始。"),
    "Votes are not kept.": "投票不会保存。",
    "Left is better": "左侧更好",
    "Right is better": "右侧更好",
    "Tie": "平局",
    "Both are bad": "都不好",
    "Thanks: {label}. A tie or two bad answers make no preference pair: nothing was written.": (
        "谢谢：{label}。平局或两个都不好不构成偏好数据对：未写入任何内容。"
    ),
    "Thanks: {label}. This demo keeps no votes: nothing was written.": (
        "谢谢：{label}。此演示不保存投票：未写入任何内容。"
    ),
    "Thanks: {label}. Kept as a preference pair.": "谢谢：{label}。已保存为偏好数据对。",
    "There is no comparison to vote on yet: ask a question and wait for both answers.": (
        "还没有可投票的对比：请先提问并等待两个回答。"
    ),
    "An answer was stopped before its end: ask again to vote on two whole answers.": (
        "有一个回答在结束前被停止了：请重新提问，以便对两个完整的回答投票。"
    ),
    "You already voted on this comparison (one vote each): ask another question to vote again.": (
        "你已经对此对比投过票（每次对比一票）：请提出新问题后再投票。"
    ),
    "Compare on images or on a video, not both: remove one of them.": (
        "请基于图像或视频进行对比，不要同时使用：请移除其中之一。"
    ),
    (
        "Votes with a winner are kept, with the question and its images or video, as "
        "preference pairs for training."
    ): ("有胜者的投票会连同问题及其图像或视频一起，作为训练用的偏好数据对保存。"),
    # the chat's own messages around an answer (interface.conversation)
    "Thinking": "思考过程",
    "Reasoning": "推理过程",
    "(no answer)": "（没有回答）",
    "(no final answer)": "（没有最终答案）",
    "Final answer:": "最终答案：",
    "Other answer ({number} of {total})": "其他回答（第 {number} 个，共 {total} 个）",
    "not used · like it to use it instead": "未使用 · 点赞即可改用它",
    # the backend's most frequent refusals without values (the others stay in English)
    "The conversation must end with a question from the user.": "对话必须以用户的提问结尾。",
    "One message can carry images or a video, not both: send them separately.": (
        "一条消息只能带图像或视频，不能同时带两者：请分开发送。"
    ),
    "The video contains no frames.": "该视频不含任何帧。",
}


def english(text: str) -> str:
    return text


def chinese(text: str) -> str:
    return ZH.get(text, text)


EN: dict[str, str] = {text: text for text in ZH}
EN[SWITCH_TEXT] = SWITCH_TEXT
I18N = gr.I18n(en=EN, zh=ZH)  # the tables themselves: texts formatted later are added to them


def localized_by(compose: Callable[[Callable[[str], str]], str]) -> I18nData:
    """A component text made of translated pieces: `compose(say)` writes it with `say` giving
    each piece in one language. Both versions join the tables (build the UI before launch)."""
    key = compose(english)
    if key not in ZH:
        ZH[key], EN[key] = compose(chinese), key
    return I18N(key)


def localized(text: str, **values) -> I18nData:
    """A component text (label, info, placeholder, button, Markdown) in the reader's language;
    `values` fill its `{fields}` in both languages."""
    if not values:
        return I18N(text)
    return localized_by(lambda say: say(text).format(**values))


def language_of(cookie: str | None, accept_language: str | None, chosen: str | None = None) -> str:
    """The reader's language, "zh" or "en": the switch's choice if the browser sent one (the
    page script's header `chosen`, else the cookie), else the first language the browser asks
    for (as the page itself does); English for any other."""
    if not chosen and cookie:
        # Not SimpleCookie: it drops every cookie when one of them (another app's on this host)
        # is malformed.
        chosen = cookie_parser(cookie).get(LANGUAGE_COOKIE)
    if not chosen and accept_language:
        ranked = []
        for position, item in enumerate(accept_language.split(",")):
            tag, _, quality = item.strip().partition(";q=")
            try:
                weight = float(quality) if quality else 1.0
            except ValueError:
                weight = 0.0
            ranked.append((-weight, position, tag.strip()))
        chosen = min(ranked)[2] if ranked else None
    return "zh" if (chosen or "").lower().startswith("zh") else "en"


def request_language(request=None) -> str:
    """The language of `request`, or of the request whose event is running."""
    request = request if request is not None else LocalContext.request.get(None)
    headers = getattr(request, "headers", None) or {}
    return language_of(
        headers.get("cookie"), headers.get("accept-language"), headers.get(LANGUAGE_HEADER)
    )


@cache
def template_pattern(template: str) -> re.Pattern:
    """A regular expression matching the texts `template` formats, its fields as groups."""
    pattern = []
    for literal, name, _, _ in string.Formatter().parse(template):
        pattern.append(re.escape(literal))
        if name:
            pattern.append(f"(?P<{name}>.+?)")
    return re.compile("".join(pattern), re.DOTALL)


# The messages formatted in English where they are raised (an InputError or gr.Error whose text
# reaches translate() finished), recognised by their template. Only these: a general template
# ("{count} pages") would match unrelated messages ("Please upload 3 pages").
RAISED_TEMPLATES = (
    # interface.queueing: refuse_if_over, and the answer stopped for its idle reader
    (
        "You already have {jobs} requests waiting for or running on the model, the most one"
        " client may have ({per_session} per session, {per_address} per address). Wait for one"
        " to finish or cancel one, then try again."
    ),
    "Stopped: nobody read this answer for {seconds} s, and others were waiting for the model.",
    # interface.export: a conversation too large to export
    (
        "This conversation is too large to export: about {needed} MB with its images, and exports"
        " may take {budget} MB."
    ),
    # interface.preferences: a vote whose file is gone
    (
        "The file {name} is no longer available, so the preference cannot be kept with it."
        " Please attach it again."
    ),
    # interface.multi_image_chat.check_image_limit
    (
        "This conversation would hold {total} images; the limit is {max_images}. Remove some"
        " before sending, or press Clear to start a new conversation."
    ),
)


def chinese_message(text: str) -> str:
    """`text` in Chinese: from the table, or formatted from one of RAISED_TEMPLATES."""
    if text in ZH:
        return ZH[text]
    for template in RAISED_TEMPLATES:
        if match := template_pattern(template).fullmatch(text):
            return ZH[template].format(**match.groupdict())
    return text


def translate(text: str, request=None, **values) -> str:
    """A message written by the server, in the language of the request (`request`, or the one
    whose event is running; English without one, as for a bare API call). `values` fill the
    fields of `text`'s translation. Texts not in the table (most of the backend's messages)
    stay as they are."""
    chinese = request_language(request) == "zh"
    if values:
        return (ZH.get(text, text) if chinese else text).format(**values)
    return chinese_message(text) if chinese else text


def language_switch() -> gr.Button:
    """The header's switch (English / 中文); LANGUAGE_SCRIPT makes it work."""
    return gr.Button(
        localized(SWITCH_TEXT), size="sm", scale=0, min_width=90, elem_id="language-switch"
    )


# The first script of the page (interface.security adds it): Gradio's frontend takes its language
# from navigator.language when it starts, so a language chosen with the switch replaces the
# browser's there, before Gradio runs. It goes to the server as a header on the page's own
# requests (fetch is wrapped before Gradio's client takes it: a Space embedded in another site's
# page may get no cookie) and as a cookie (SameSite=None over https, for embedded pages where
# third-party cookies are allowed). A click on the switch stores the other language and reloads.
LANGUAGE_SCRIPT = """<script>
(() => {
  const KEY = "LANGUAGE_KEY";
  const SAME_SITE = location.protocol === "https:" ? "samesite=none; secure" : "samesite=lax";
  const remember = (locale) => {
    localStorage.setItem(KEY, locale);
    document.cookie = `${KEY}=${locale}; path=/; max-age=31536000; ${SAME_SITE}`;
  };
  const chosen = localStorage.getItem(KEY);
  if (chosen) {
    remember(chosen);
    Object.defineProperty(navigator, "language", { get: () => chosen });
    Object.defineProperty(navigator, "languages", { get: () => [chosen] });
    const send = window.fetch.bind(window);
    window.fetch = (input, init) => {
      const request = input instanceof Request ? input : null;
      const url = new URL(request ? request.url : String(input), location.href);
      if (url.origin !== location.origin) return send(input, init);
      const headers = new Headers((init && init.headers) || (request && request.headers) || {});
      headers.set("LANGUAGE_HEADER", chosen);
      return send(input, { ...init, headers });
    };
  }
  document.addEventListener("click", (event) => {
    if (event.target.closest("#language-switch")) {
      remember(document.documentElement.lang.startsWith("zh") ? "en" : "zh-CN");
      location.reload();
    }
  });
})();
</script>""".replace("LANGUAGE_KEY", LANGUAGE_COOKIE).replace("LANGUAGE_HEADER", LANGUAGE_HEADER)
HEAD_TAG = re.compile(rb"<head(\s[^>]*)?>", re.IGNORECASE)


def with_language_choice(page: bytes) -> bytes:
    """Gradio's page with LANGUAGE_SCRIPT first in its <head>."""
    return HEAD_TAG.sub(lambda tag: tag.group(0) + LANGUAGE_SCRIPT.encode(), page, count=1)


def language_options() -> dict:
    """Keyword arguments for `demo.launch()`: the translations. (The switch needs the page
    script that interface.security's middleware adds.)"""
    return {"i18n": I18N}
